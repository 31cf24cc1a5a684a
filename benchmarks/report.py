"""The speed report from run.py's results dict, as markdown: tables, targets, and why a
target was missed (run.py turns it into results/speed_<machine kind>.json).

The explanations are computed from the same run's numbers (profile shares, paired
ratios), so they stay true when the benchmark is re-run on another machine.
"""


BF16 = "mixed_bfloat16"
MODEL_TITLE = {"resnet50": "ResNet-50 @224", "resnet18_cifar": "ResNet-18 CIFAR stem @32",
               "resnet20": "ResNet-20 (option A) @32"}
MODELS = tuple(MODEL_TITLE)
INFER_BATCHES = (1, 32)
AMX_PEAK_TFLOPS = 10.6  # the issue's figure for 2 AMX-BF16 cores
# keras.applications' unfused BatchNorm and mixed-precision casts, in its profile.
_UNFUSED_BN_OPS = ("Mul", "Mean", "Sum", "SquaredDifference", "Tile", "Sub", "Rsqrt", "Cast",
                   "Reshape", "BroadcastTo", "RealDiv", "AddV2")
SM = "resnet_tf SavedModel (export_serving_model)"
KA_SM = "keras.applications SavedModel (export_serving_model)"
KA_EXPORT = "keras.applications SavedModel (model.export)"
OURS_BF16 = "resnet_tf SavedModel bfloat16 (export_serving_model)"
TFL32, TFL8 = "resnet_tf TFLite float32", "resnet_tf TFLite int8"


def x(value):
    return "-" if value is None else f"{value:.2f}x"


def pct(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def _rows_by_group(results):
    groups = {}
    for row in results.get("train") or []:
        groups.setdefault(row["group"], {})[row["label"]] = row
    return groups


def _ratio(results, group, a, b):
    return results.get("train_ratios", {}).get(f"{group} | {a} / {b}")


def torch_best(results, group, ours_label):
    """(ratio, torch setting) against PyTorch bf16's faster thread count in this group."""
    options = [(_ratio(results, group, ours_label, t), t)
               for t in ("torch bf16", "torch bf16 1 thread")]
    options = [o for o in options if o[0] is not None]
    return min(options) if options else (None, None)


# --- sections -----------------------------------------------------------------------------


def train_section(results):
    lines = ["| network | batch | precision | resnet_tf | keras.applications | keras-hub | "
             "PyTorch 2 threads | PyTorch 1 thread | resnet_tf / keras.apps | resnet_tf / "
             "keras-hub | resnet_tf / PyTorch 2 thr | resnet_tf / PyTorch 1 thr | params "
             "resnet_tf / torch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def cell(r):
        return "-" if r is None else f"{r['img_s']:.1f} ±{100 * r['spread']:.0f}%"

    for group, rows in _rows_by_group(results).items():
        model = next(iter(rows.values()))["model"]
        for precision, tp in ((BF16, "bf16"), ("float32", "float32")):
            ours_label = f"resnet_tf {precision}"
            ours = rows.get(ours_label)
            if not ours:
                continue
            ka = rows.get(f"keras.applications {precision}")
            kh = rows.get(f"keras-hub {precision}")
            t2, t1 = rows.get(f"torch {tp}"), rows.get(f"torch {tp} 1 thread")
            params = f"{ours['params']:,}"
            if t2:
                params += f" / {t2['params']:,} ({'equal' if t2['params'] == ours['params'] else 'DIFFERENT'})"
            auto = " (auto)" if precision == results.get("auto") else ""
            lines.append(
                f"| {MODEL_TITLE[model]} | {ours['batch']} | {precision}{auto} | {cell(ours)} | "
                f"{cell(ka)} | {cell(kh)} | {cell(t2)} | {cell(t1)} | "
                f"{x(_ratio(results, group, ours_label, f'keras.applications {precision}'))} | "
                f"{x(_ratio(results, group, ours_label, f'keras-hub {precision}'))} | "
                f"{x(_ratio(results, group, ours_label, f'torch {tp}'))} | "
                f"{x(_ratio(results, group, ours_label, f'torch {tp} 1 thread'))} | {params} |")
    return lines


def flops_section(results):
    gemm = results.get("gemm") or {}
    amx = bool(results["machine"].get("amx"))  # the AMX peak means nothing elsewhere
    lines = ["| network | precision | forward GFLOP/img | training TFLOP/s (3x forward) | "
             + (f"of the issue's {AMX_PEAK_TFLOPS} TFLOP/s AMX peak | " if amx else "")
             + "of this run's TF GEMM ceiling |",
             "|---|---|---|---|" + ("---|" if amx else "") + "---|"]
    for r in results.get("train") or []:
        if not r["label"].startswith("resnet_tf") or not r.get("fwd_flops"):
            continue
        precision = r["label"].split()[-1]
        tflops = 3 * r["fwd_flops"] * r["img_s"] / 1e12
        ceiling = gemm.get("tensorflow bfloat16" if precision == BF16 else "tensorflow float32")
        lines.append(f"| {MODEL_TITLE[r['model']]} | {precision} | {r['fwd_flops'] / 1e9:.2f} | "
                     f"{tflops:.3f} | " + (f"{pct(tflops / AMX_PEAK_TFLOPS)} | " if amx else "")
                     + f"{pct(tflops * 1e3 / ceiling) if ceiling else '-'} |")
    if gemm:
        lines += ["", "GEMM ceiling (2048x2048x2048 matmul, best repeat, 2 threads): "
                  + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in gemm.items()) + "."]
    lines += ["", "FLOPs count 2 per multiply-add of every Conv2D and Dense layer (ResNet-50: "
              "4.1 G multiply-adds = 8.2 GFLOP per image forward); training is taken as 3x forward."]
    return lines


def profile_section(results):
    lines = []
    for key, p in (results.get("profiles") or {}).items():
        lines += ["", f"**{key}**: wall {p['wall_ms_per_step']:,.0f} ms/step; op self time "
                      f"{p['op_ms_per_step']:,.0f} ms/step (up to two ops run at once, so it can "
                      f"exceed the wall); executor overhead {p['executor_overhead_ms_per_step']:,.0f}"
                      f" ms/step. Trace: `{p['trace']}`", "",
                  "| category | ms/step | share | top op types | ms/step | share |",
                  "|---|---|---|---|---|---|"]
        cats, types = p["by_category"], p["by_type"]
        for i in range(min(10, max(len(cats), len(types)))):
            c = cats[i] if i < len(cats) else None
            t = types[i] if i < len(types) else None
            lines.append((f"| {c['name']} | {c['ms_per_step']:,.0f} | {pct(c['share'])} |" if c
                          else "| | | |")
                         + (f" {t['name']} ({t['count_per_step']}/step) | {t['ms_per_step']:,.0f} | "
                            f"{pct(t['share'])} |" if t else " | | |"))
    o = results.get("onednn")
    if o:
        lines += ["", f"**oneDNN kernels of one resnet_tf ResNet-50 {BF16} step** "
                      f"(`ONEDNN_VERBOSE=1`; wall {o['wall_ms_per_step']:,.0f} ms, kernel time "
                      f"{o['total_ms_per_step']:,.0f} ms, convolutions {pct(o['conv_share'])}):", "",
                  "| primitive | implementation (ISA) | pass | calls | ms | share | GFLOP/s |",
                  "|---|---|---|---|---|---|---|"]
        for r in o["rows"]:
            lines.append(f"| {r['primitive']} | `{r['impl']}` | {r['prop']} | {r['count_per_step']} | "
                         f"{r['ms_per_step']:,.0f} | {pct(r['share'])} | {r['gflops'] or '-'} |")
    return lines


def infer_section(results):
    rows = results.get("infer") or []
    ratios = results.get("infer_ratios", {})
    lines = ["| ResNet-50 @224 | batch 1 ms | batch 1 img/s | batch 32 ms | batch 32 img/s | setup |",
             "|---|---|---|---|---|---|"]
    for label in dict.fromkeys(r["label"] for r in rows):
        cells = []
        for batch in INFER_BATCHES:
            r = next((r for r in rows if r["label"] == label and r["batch"] == batch), None)
            cells += ["-", "-"] if r is None else [f"{r['ms']:.1f} ±{100 * r['spread']:.0f}%",
                                                   f"{r['img_s']:.1f}"]
        info = next(r["info"] for r in rows if r["label"] == label)
        setup = (f"export {info['export_s']} s" if "export_s" in info else
                 f"convert {info['convert_s']} s, {info['size_mb']} MB")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {setup} |")
    lines += ["", "| paired speed-up | batch 1 | batch 32 |", "|---|---|---|"]
    for name in dict.fromkeys(k.split(" | ", 1)[1] for k in ratios):
        lines.append(f"| {name.replace(' / ', ' vs ')} | {x(ratios.get(f'batch 1 | {name}'))} | "
                     f"{x(ratios.get(f'batch 32 | {name}'))} |")
    return lines


def pipeline_section(p):
    info = p["info"]
    return [f"{MODEL_TITLE[p['model']]}, batch {p['batch']}, {info['precision']}; `model.fit` "
            "steps after the first of each call. Real: `load_data(data_dir=...)` as train.py "
            f"calls it ({info['train_examples']} training images decoded into memory in "
            f"{info['load_s']} s, then shuffle + pad-and-crop + flip per epoch); synthetic: "
            "`load_data(\"synthetic\")`; both one-hot as train.py does.", "",
            "| data | img/s |", "|---|---|",
            f"| real JPEG folder | {p['real']:.0f} |",
            f"| synthetic in memory | {p['synthetic']:.0f} |",
            f"| the real pipeline alone, no model | {p['pipeline_alone']:.0f} |", "",
            f"Overhead of the real pipeline: {pct(1 - 1 / p['ratio'])} (synthetic / real "
            f"{p['ratio']:.3f}, median of paired rounds; repeats spread ±{100 * p['spread']:.0f}%)."]


# --- targets ------------------------------------------------------------------------------


def targets(results):
    """[(goal, shown value, met, why-if-missed)] for each goal this run measured."""
    out = []
    groups = _rows_by_group(results)
    auto = results.get("auto", BF16)
    for group, rows in groups.items():
        model = next(iter(rows.values()))["model"]
        title = MODEL_TITLE[model]
        for precision in (BF16, "float32"):
            r = _ratio(results, group, f"resnet_tf {precision}", f"keras.applications {precision}")
            if r is not None:
                out.append((f"{title} training {precision}: >= 2.0x keras.applications", x(r),
                            r >= 2.0, _why_keras_apps(results, group, precision, r)))
        if f"resnet_tf {auto}" in rows:
            r, setting = torch_best(results, group, f"resnet_tf {auto}")
            if r is not None:
                out.append((f"{title} training auto ({auto}): >= 1.1x PyTorch bf16",
                            f"{x(r)} (vs {setting})", r >= 1.1,
                            _why_torch(results, group, auto, r)))
    p = results.get("pipeline")
    if p and p.get("ratio"):
        overhead = 1 - 1 / p["ratio"]
        why = (f"the pipeline alone delivers {p['pipeline_alone']:.0f} img/s, "
               f"{p['pipeline_alone'] / p['synthetic']:.0f}x what training consumes, but its "
               "map/shuffle/batch threads take CPU from the 2 cores the model trains on; "
               "the repeats spread "
               f"±{100 * p['spread']:.0f}%" + (" on this loaded machine" if _loaded(results) else ""))
        out.append(("input pipeline overhead <= 5%", pct(overhead), overhead <= 0.05, why))
    ir = results.get("infer_ratios", {})
    for batch in INFER_BATCHES:
        for other in (KA_SM, KA_EXPORT):
            r = ir.get(f"batch {batch} | {SM} / {other}")
            if r is not None:
                how = other.split("(")[1].rstrip(")")
                out.append((f"SavedModel inference batch {batch}: >= 1.5x keras.applications "
                            f"({how})", x(r), r >= 1.5, _why_savedmodel(results, batch)))
        r = ir.get(f"batch {batch} | {OURS_BF16} / {KA_EXPORT}")
        if r is not None:
            out.append((f"SavedModel inference batch {batch}, resnet_tf's bfloat16 export "
                        "(`--precision bfloat16`): >= 1.5x keras.applications (model.export, "
                        "float32)", x(r), r >= 1.5,
                        "bfloat16 convolutions on AVX512-BF16 without AMX gain less than "
                        "2x over float32 ones"))
    r = ir.get(f"batch 1 | {TFL8} / {TFL32}")
    if r is not None:
        out.append(("TFLite int8 >= 2x TFLite float32 at batch 1", x(r), r >= 2.0,
                    "XNNPACK's int8 kernels do not reach twice its float32 speed here"))
    imp = results.get("import")
    if imp:
        out.append(("`import resnet_tf` does not import tensorflow_datasets",
                    "imported" if imp["tfds_imported"] else "not imported",
                    not imp["tfds_imported"], "resnet_tf imports it at module level"))
    return out


def _conv_share(profile):
    return sum(c["share"] for c in profile["by_category"] if c["name"].startswith("conv"))


def _why_keras_apps(results, group, precision, ratio):
    rows = _rows_by_group(results)[group]
    model = rows[f"resnet_tf {precision}"]["model"]
    profiles = results.get("profiles") or {}
    p = profiles.get(f"{model} | resnet_tf {precision}")
    pk = profiles.get(f"{model} | keras.applications {precision}")
    text = []
    if p:
        share = _conv_share(p)
        text.append(f"convolutions are {pct(share)} of resnet_tf's op time and do the same work "
                    "in both models with the same oneDNN kernels (keras.applications' v1 blocks "
                    "even do 5% fewer FLOPs); with every other op of resnet_tf free, the ratio "
                    f"could reach at most {ratio / share:.2f}x on this CPU")
    else:
        bf16 = profiles.get(f"{model} | resnet_tf {BF16}")
        share = f" (at {BF16} they are {pct(_conv_share(bf16))} of resnet_tf's op time)" if bf16 else ""
        text.append("no float32 profile is taken; the convolutions, the same oneDNN kernels in "
                    f"both models, dominate the step{share}, so removing BatchNorm overhead "
                    "moves the ratio little")
    if pk:
        extra = sum(t["ms_per_step"] for t in pk["by_type"] if t["name"] in _UNFUSED_BN_OPS)
        text.append(f"keras.applications' extra cost is its unfused BatchNorm and casts "
                    f"(Mul/Sum/Mean/SquaredDifference/Tile/Cast: {extra:,.0f} ms/step of op "
                    "time in its profile), which resnet_tf's fused BatchNormalization removes")
    text.append("this CPU has no AMX, so its convolutions are slow (oneDNN table) and the "
                "BatchNorm overhead is a smaller part of the step than on an AMX CPU")
    spreads = [rows[k]["spread"] for k in (f"resnet_tf {precision}",
                                           f"keras.applications {precision}") if k in rows]
    text.append(f"repeats spread up to ±{100 * max(spreads):.0f}%"
                + (" on this loaded machine" if _loaded(results) else ""))
    return "; ".join(text)


def _loaded(results):
    """Whether other jobs shared the cores: a 1-min load average above 1 before the run began."""
    return results.get("load_start", 0) > 1.0


def _why_torch(results, group, auto, ratio):
    rows = _rows_by_group(results)[group]
    r2 = _ratio(results, group, "torch bf16 1 thread", "torch bf16")
    text = []
    if r2 is not None and r2 > 1:
        text.append(f"PyTorch with 1 thread ran {r2:.2f}x as fast as with 2 threads in the same "
                    "rounds: with other jobs on the 2 cores, a 2-thread step waits for whichever "
                    "thread was pre-empted (PyTorch at every OpenMP barrier, TensorFlow less "
                    "often), while one thread just runs; the comparison then measures the load "
                    "as much as the libraries")
    ours, one = rows.get(f"resnet_tf {auto}"), rows.get("torch bf16 1 thread")
    if ours and one:
        text.append(f"resnet_tf's 2-thread repeats spread ±{100 * ours['spread']:.0f}%, "
                    f"PyTorch's 1-thread ones ±{100 * one['spread']:.0f}%")
    text.append("both run the same oneDNN convolution kernels (avx512_core_bf16; the "
                "backward-weights one dominates), so there is no kernel advantage to win")
    return "; ".join(text)


def _infer_ratio(results, batch, a, b):
    """Paired ratio time_b / time_a from the inference rows (their repeats share rounds)."""
    rows = {r["label"]: r["times"] for r in results.get("infer") or [] if r["batch"] == batch}
    if a not in rows or b not in rows:
        return None
    ratios = sorted(tb / ta for ta, tb in zip(rows[a], rows[b]))
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def _why_savedmodel(results, batch):
    text = ["in float32 both networks run the same oneDNN convolutions"]
    same = _infer_ratio(results, batch, SM, KA_SM)
    if same is not None:
        text.append(f"through the same export_serving_model they are equally fast ({same:.2f}x)")
    folded = _infer_ratio(results, batch, KA_SM, KA_EXPORT)
    if folded is not None:
        text.append("what export_serving_model gains (BatchNorm folded, weights frozen into "
                    f"constants) it gains for any ResNet: keras.applications' network ran "
                    f"{folded:.2f}x faster through it than through its own Keras export")
    r = results.get("infer_ratios", {}).get(f"batch {batch} | {OURS_BF16} / {SM}")
    if r is not None:
        text.append(f"the lever is precision: resnet_tf's bfloat16 export ran {r:.2f}x "
                    f"its float32 export at batch {batch}")
    return "; ".join(text)


# --- document -----------------------------------------------------------------------------


def render(results, mode_name, mode, seconds):
    m = results["machine"]
    lines = [
        "# resnet_tf benchmarks", "",
        f"Written by `python benchmarks/run.py{' --quick' if mode_name == 'quick' else ''}` on "
        f"{results['date']} in {seconds / 60:.1f} min. {mode_name} mode: each number is the "
        f"median of {mode['reps']} interleaved repeats after {mode['warmup']} warm-up "
        "repeat(s) and the tracing step; `±` is half the min-max range of the repeats; a "
        "ratio is the median of the per-round ratios. Method: benchmarks/README.md.", "",
        "## Machine", "",
        f"- CPU: {m['cpu']} (vendor {m.get('vendor_id', '?')}, family {m.get('cpu family', '?')}, "
        f"model {m.get('model', '?')}), {m['cores']} cores, {m['memory_gb']} GiB",
        f"- flags: {' '.join(m['fast_flags'] + (['avx2'] if m.get('avx2') else [])) or '-'}; "
        f"AMX: {'yes' if m['amx'] else '**no**'}; machine kind: {m.get('kind', '?')}",
        *([f"- **emulated**: ONEDNN_MAX_CPU_ISA={m['isa_cap']} (PyTorch: ATEN_CPU_CAPABILITY="
           f"{m.get('aten_capability', '?')}); the flags above are the CPU's own, which the "
           "kernels did not use beyond the cap"] if m.get("isa_cap") else []),
        "- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; oneDNN: {m['onednn']}; auto precision: {results.get('auto')}",
        f"- 1-min load average: {results['load_start']:.1f} at the start, "
        f"{results.get('load_end', 0):.1f} at the end, on {m['cores']} cores"
        + (": other jobs ran too, hence the interleaving." if _loaded(results) else
           ": no other jobs (the benchmark's own 2-thread workers make up the load)."),
    ]
    if results.get("train"):
        lines += ["", "## 1. Training throughput, img/s (forward + backward + SGD momentum)", "",
                  "Keras: `compile(jit_compile=False)` + `train_on_batch` on in-memory tensors "
                  f"(sparse cross-entropy). PyTorch {m['versions'].get('torch', '')}: same architecture (parameter counts in "
                  "the last column), channels_last, bf16 via `torch.autocast`, "
                  "`torch.set_num_threads(2)`, and 1 thread as a check of the load's effect.", ""]
        lines += train_section(results)
        lines += ["", "### Achieved FLOP/s", ""] + flops_section(results)
    if results.get("profiles") or results.get("onednn"):
        lines += ["", "### Where the time goes"] + profile_section(results)
    if results.get("infer"):
        lines += ["", "## 2. Inference: ResNet-50 @224", "",
                  "SavedModels loaded with `tf.saved_model.load` and called through a signature "
                  "(float32 unless marked); `export_serving_model` is resnet_tf.export's "
                  "(BatchNorm folded, uint8 pixels in via `serving_pixels`), `model.export` "
                  "is Keras' own. TFLite: the files `resnet-export --tflite float32,int8` writes "
                  "(`resnet_tf.export.export_tflite`; int8 is full-integer with int8 input and "
                  "output, calibrated on random images: calibration sets the scales, not the "
                  "speed), run by `resnet_tf.export.load_interpreter` with 2 threads (XNNPACK); "
                  "the int8 input is quantized before the clock starts.", ""]
        lines += infer_section(results)
    if results.get("pipeline"):
        lines += ["", "## 3. Input pipeline", ""] + pipeline_section(results["pipeline"])
    imp = results.get("import")
    if imp:
        lines += ["", "## Import time", "",
                  f"`import resnet_tf`: {imp['resnet_tf']:.2f} s; `import keras`: "
                  f"{imp['keras']:.2f} s (medians of {imp['runs']} fresh interpreters, "
                  "alternating; resnet_tf's own share is the difference, the rest is Keras "
                  "importing TensorFlow). tensorflow_datasets imported: "
                  f"{'**yes**' if imp['tfds_imported'] else 'no'}."]
    rows = targets(results)
    if rows:
        lines += ["", "## Targets", "", "| goal | measured | met |", "|---|---|---|"]
        lines += [f"| {goal} | {value} | {'yes' if met else '**no**'} |"
                  for goal, value, met, _ in rows]
        reasons = {}  # one explanation, listing every goal it explains
        for goal, value, met, why in rows:
            if not met:
                reasons.setdefault(why, []).append(f"**{goal}** ({value})")
        if reasons:
            lines += ["", "Why the missed ones are missed:", ""]
            lines += [f"- {'; '.join(goals)}: {why}." for why, goals in reasons.items()]
    return "\n".join(lines) + "\n"
