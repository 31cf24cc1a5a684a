"""Where a training step's time goes, from two sources that need no TensorBoard plugin.

- `summarize(logdir)`: the TF profiler's `*.xplane.pb` (written by
  `tf.profiler.experimental.start/stop`). On the CPU every TensorFlow op is one event
  named `op_name:OpType` on the executor thread that ran it; its self time is its
  duration minus the events nested in it on the same thread. TensorFlow runs up to
  two ops at once here (inter-op threads), so op times can add up to more than the wall.
- `onednn_kernels(log)`: the `ONEDNN_VERBOSE=1` lines between `@@MARK-START` and
  `@@MARK-END`: time, count and achieved GFLOP/s per oneDNN primitive and
  implementation, which names the instruction set the kernels use (e.g. `avx512_core_bf16`
  or `avx512_core_amx`).

    python benchmarks/profile_summary.py LOGDIR [--steps N]
"""

import argparse
import collections
import glob
import os
import re

# Op type (minus oneDNN's "_MklNative"/"_Mkl" prefix) -> category: the first row with a
# prefix of the type wins.
CATEGORIES = (
    ("conv backward (filter)", ("Conv2DBackpropFilter",)),
    ("conv backward (input)", ("Conv2DBackpropInput",)),
    ("conv forward", ("Conv2D", "FusedConv2D", "DepthwiseConv2d")),
    ("batchnorm backward", ("FusedBatchNormGrad",)),
    ("batchnorm forward", ("FusedBatchNorm",)),
    ("cast (dtype conversion)", ("Cast",)),
    ("relu / relu grad", ("Relu",)),
    ("add / addn (residuals, grads)", ("Add",)),
    ("pooling", ("MaxPool", "AvgPool", "Mean")),
    ("pad / slice (shortcuts, padding)", ("Pad", "StridedSlice", "Slice", "MirrorPad")),
    ("matmul (classifier)", ("MatMul", "BatchMatMul")),
)
OPTIMIZER_PREFIXES = ("sgd/", "SGD/", "adam", "AdamW/")
_NOT_OPS = ("ThreadpoolListener", "ExecutorState", "Memory", "EagerExecute", "TFE_")


def find_xplane(logdir):
    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise FileNotFoundError(f"No *.xplane.pb under {logdir}")
    return files[-1]


def op_type(event_name):
    op = event_name.rsplit(":", 1)[-1]
    for prefix in ("_MklNative", "_Mkl"):
        if op.startswith(prefix):
            op = op[len(prefix):]
    return op


def category(event_name):
    name, op = event_name.rsplit(":", 1)[0], op_type(event_name)
    if name.startswith(OPTIMIZER_PREFIXES):
        return "optimizer update"
    for label, prefixes in CATEGORIES:
        if op.startswith(prefixes):
            return label
    return "other"


def self_times(path):
    """{event name: [self time in seconds, count]} over every thread of the host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        if not plane.name.startswith("/host"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            events = sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps))
            stack = []  # [end, name, self_ps]
            def close(entry):
                _, name, own = entry
                totals[name][0] += own * 1e-12
                totals[name][1] += 1
            for e in events:
                end = e.offset_ps + e.duration_ps
                while stack and stack[-1][0] <= e.offset_ps:
                    close(stack.pop())
                if stack:
                    stack[-1][2] -= e.duration_ps
                stack.append([end, names.get(e.metadata_id, "?"), e.duration_ps])
            while stack:
                close(stack.pop())
    return totals


def summarize(logdir, steps=1, wall_s=None, top=12):
    """Per-step op self time by category and by op type; JSON-serialisable."""
    totals = self_times(find_xplane(logdir))
    ops = {n: v for n, v in totals.items()
           if ":" in n and "::" not in n and not n.startswith(_NOT_OPS)}
    op_total = sum(v[0] for v in ops.values())
    by_category = collections.Counter()
    by_type = collections.Counter()
    type_count = collections.Counter()
    for name, (seconds, count) in ops.items():
        by_category[category(name)] += seconds
        by_type[op_type(name)] += seconds
        type_count[op_type(name)] += count
    executor = sum(v[0] for n, v in totals.items() if n.startswith("ExecutorState"))

    def rows(counter, n=None):
        return [
            dict(name=k, ms_per_step=round(1e3 * s / steps, 1), share=round(s / op_total, 3),
                 **({"count_per_step": round(type_count[k] / steps)} if counter is by_type else {}))
            for k, s in counter.most_common(n)
        ]

    return dict(
        steps=steps,
        wall_ms_per_step=None if wall_s is None else round(1e3 * wall_s / steps, 1),
        op_ms_per_step=round(1e3 * op_total / steps, 1),
        executor_overhead_ms_per_step=round(1e3 * executor / steps, 1),
        by_category=rows(by_category),
        by_type=rows(by_type, top),
        trace=os.path.abspath(find_xplane(logdir)),
    )


def onednn_kernels(log_path, steps=1, top=10):
    """Per (primitive, implementation, propagation) time and convolution GFLOP/s."""
    with open(log_path, errors="replace") as f:
        text = f.read()
    if "@@MARK-START" not in text:
        raise ValueError(f"No @@MARK-START in {log_path}")
    text = text.split("@@MARK-START", 1)[1].split("@@MARK-END", 1)[0]
    totals = collections.defaultdict(lambda: [0.0, 0, 0])  # ms, count, flops
    for line in text.splitlines():
        if not line.startswith("onednn_verbose") or ",exec," not in line:
            continue
        fields = line.split(",")
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        key = (fields[5], fields[6], fields[7])
        totals[key][0] += ms
        totals[key][1] += 1
        if fields[5] == "convolution":
            d = {k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", fields[-2])}
            totals[key][2] += (2 * d.get("mb", 1) * d.get("g", 1) * (d["ic"] // d.get("g", 1))
                               * d["oc"] * d["oh"] * d["ow"] * d["kh"] * d["kw"])
    total = sum(v[0] for v in totals.values()) or 1.0
    rows = []
    for (kind, impl, prop), (ms, count, flops) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        rows.append(dict(primitive=kind, impl=impl, prop=prop, ms_per_step=round(ms / steps, 1),
                         share=round(ms / total, 3), count_per_step=round(count / steps),
                         gflops=round(flops / ms / 1e6, 1) if flops else None))
    conv = [r for r in rows if r["primitive"] == "convolution"]
    return dict(total_ms_per_step=round(total / steps, 1),
                conv_share=round(sum(r["share"] for r in conv), 3), rows=rows[:top])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("--steps", type=int, default=1, help="steps the trace holds")
    args = parser.parse_args()
    summary = summarize(args.logdir, args.steps)
    print(f"op self time {summary['op_ms_per_step']} ms/step "
          f"(executor overhead {summary['executor_overhead_ms_per_step']} ms/step)")
    for title in ("by_category", "by_type"):
        print(f"\n{title}:")
        for row in summary[title]:
            print(f"  {row['ms_per_step']:9.1f} ms  {100 * row['share']:5.1f}%  {row['name']}")


if __name__ == "__main__":
    main()
