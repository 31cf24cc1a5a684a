"""Image folders: one walk, one list of accepted extensions, for training, evaluation and prediction.

A dataset folder holds one sub-folder of images per class. Class `i` is the `i`-th
sub-folder name in sorted order, so labels are stable across machines.
"""

import os
import warnings

from resnet_tf.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
FOLDER_LAYOUT = "a folder with one sub-folder of images per class"


def list_image_folder(path):
    """Lists a folder with one sub-folder of images per class.

    Class `i` is the `i`-th sub-folder name in sorted order, so labels are stable across
    machines. Sub-folders are searched recursively; hidden files and folders and files
    without an `IMAGE_EXTENSIONS` suffix (any case) are ignored.

    Returns:
        `(files, labels, class_names)`: lists of str paths, int labels and str names.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"Image folder '{path}' does not exist; expected {FOLDER_LAYOUT}.")
    if not os.path.isdir(path):
        raise DataError(f"The image folder is a file. Received: '{path}'; expected {FOLDER_LAYOUT}.")
    class_names = sorted(
        e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")
    )
    if not class_names:
        raise DataError(
            f"Image folder '{path}' has no class sub-folders; expected {FOLDER_LAYOUT}, "
            f"e.g. '{os.path.join(path, 'cat', '0001.jpg')}'."
        )
    root = os.path.realpath(path)
    _check_class_folders(path, class_names, root)
    found = [list(walk_images(os.path.join(path, name), root=root)) for name in class_names]
    files, labels, empty = [], [], []
    for label, (name, class_files) in enumerate(zip(class_names, found)):
        if not class_files:
            empty.append(name)
        files += class_files
        labels += [label] * len(class_files)
    files, labels = _each_file_once(files, labels, class_names, path)
    if not files:
        raise DataError(
            f"Image folder '{path}' has {len(class_names)} class sub-folders but no image files; "
            f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}."
        )
    if empty:
        named = ", ".join(repr(n) for n in empty)
        named = f"Class folder {named} has" if len(empty) == 1 else f"Class folders {named} have"
        raise DataError(
            f"{named} no image files in '{path}'; expected at least one file ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} in every class."
        )
    return files, labels, class_names


def _check_class_folders(path, class_names, root):
    """Raises `DataError` for a class folder whose name cannot be a class name (classes.txt
    and the served model hold one printable name per line), or that is a link to the data
    folder, a folder above it, or another class folder (it would repeat their images)."""
    for name in class_names:
        if not name.strip() or not name.isprintable():
            raise DataError(
                f"Class folder names must be printable text on one line. Received: {name!r} in "
                f"'{path}'; expected a name such as 'cat' (rename the folder).")
    real = {name: os.path.realpath(os.path.join(path, name)) for name in class_names}
    for name in class_names:
        target = real[name]
        if not os.path.islink(os.path.join(path, name)):
            continue
        other = next((n for n in class_names if n != name and real[n] == target), None)
        if target == root or root.startswith(target + os.sep) or other is not None:
            leads_to = f"class folder '{other}'" if other else f"'{target}', which holds '{path}'"
            raise DataError(
                f"Class folder '{name}' in '{path}' is a link to {leads_to}. Received: a class "
                "made of other classes' images; expected one folder per class (remove the link).")


def walk_images(folder, root=None):
    """Image files under `folder`, sorted, each real file once.

    Hidden files and folders and files without an `IMAGE_EXTENSIONS` suffix (any case)
    are skipped. Symbolic links to folders are followed unless they lead back into
    `root` (default `folder`) or to a folder already walked, so a link loop such as
    `cat/up -> ..` neither repeats files nor takes another class's images.
    """
    root = os.path.realpath(root or folder)
    seen_dirs, seen_files, found = set(), set(), []
    for current, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not _leads_back(os.path.join(current, d), root, seen_dirs))
        for name in sorted(names):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(current, name)
            if not os.path.isfile(path):  # a broken link
                continue
            if os.path.realpath(path) not in seen_files:
                seen_files.add(os.path.realpath(path))
                found.append(path)
    return sorted(found)


def _leads_back(path, root, seen_dirs):
    if not os.path.islink(path):
        return False
    target = os.path.realpath(path)
    inside = target == root or target.startswith(root + os.sep) or root.startswith(target + os.sep)
    return inside or target in seen_dirs


def _each_file_once(files, labels, class_names, path):
    """Drops second paths to one real file (links between class folders), with a warning.

    The file is kept in the class folder that holds it itself (no link on the way from
    `path`), else in the first class that reaches it.
    """
    root = os.path.realpath(path)
    owner = {}
    for i, file in enumerate(files):
        real = os.path.realpath(file)
        direct = real == os.path.normpath(os.path.join(root, os.path.relpath(file, path)))
        if real not in owner or (direct and not owner[real][1]):
            owner[real] = (i, direct)
    if len(owner) == len(files):
        return files, labels
    keep = sorted(i for i, _ in owner.values())
    dropped = sorted(set(range(len(files))) - set(keep))
    warnings.warn(
        f"{len(dropped)} image file(s) in '{path}' are reachable by more than one path "
        f"(e.g. '{files[dropped[0]]}'); each is used once, in the class folder that holds "
        "it.", stacklevel=3)
    return [files[i] for i in keep], [labels[i] for i in keep]


def image_files(paths):
    """The given files, plus every image file (recursively, by `walk_images`) in the given
    folders; raises `DataError` for a path that does not exist or a folder without images."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = walk_images(path)
            if not found:
                raise DataError(f"Folder '{path}' has no image files; expected files ending in "
                                f"{', '.join(IMAGE_EXTENSIONS)}.")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise DataError(f"Image '{path}' does not exist.")
    return files
