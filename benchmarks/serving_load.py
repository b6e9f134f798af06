"""Load test of the exported SavedModel's `serving_bytes` signature.

Loads a SavedModel (`--saved-model PATH`; by default one exported in a
subprocess from a fresh child network of `configs/digits_retrain.yaml`'s
size: SNAS_moderate, 6 cells, 8 channels, 16x16) and calls its
`serving_bytes` signature with a fixed mix of requests, in order of their
index: valid images, corrupt bytes (a truncated JPEG, non-image bytes) and
headers that declare 20000x20000 pixels (a few hundred bytes each). It
runs every valid request once sequentially, then all requests from
`--threads` threads (`--requests` each, stopping after `--max-seconds`),
and reports:

- throughput (requests/s) of the threaded run and of the sequential one;
- p50 and p99 latency per kind of request;
- whether every valid request got the sequential run's answer (logits
  within 1e-5, same class) and every bad one an `InvalidArgumentError`,
  the oversize ones from the header check (before decoding);
- the peak RSS (`ru_maxrss`) after loading and warm-up and at the end.

The load runs in its own process, so its peak RSS is its own. Prints one
JSON object, as every benchmark script (`harness.emit`).

Usage:
    python benchmarks/serving_load.py [--saved-model PATH] [--threads 4]
        [--requests 50] [--max-seconds 60] [--images 2]
        [--intra 0] [--inter 0]
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import harness

KINDS = ("valid", "corrupt", "valid", "oversize")


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--saved-model", help="SavedModel directory to load")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument(
        "--requests", type=int, default=50, help="requests per thread"
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="the threaded run starts no request after this",
    )
    p.add_argument(
        "--images", type=int, default=2, help="images per valid request"
    )
    p.add_argument(
        "--intra", type=int, default=0, help="TF intra-op threads (0: TF's)"
    )
    p.add_argument(
        "--inter", type=int, default=0, help="TF inter-op threads (0: TF's)"
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    return p


def _export(args):
    """Child: a fresh digits-sized child network as a SavedModel."""
    harness.import_tensorflow(args.intra, args.inter)
    import keras

    from snas_tf.config import RetrainConfig, load_config
    from snas_tf.export.savedmodel import export_saved_model
    from snas_tf.genotype import get_genotype
    from snas_tf.models import build_child_network

    config = load_config(
        [str(harness.REPO / "configs" / "digits_retrain.yaml")],
        config_class=RetrainConfig,
    )
    keras.utils.set_random_seed(0)
    model = build_child_network(
        get_genotype(config.child.genotype),
        auxiliary=False,
        **config.child_kwargs(10),
    )
    path = os.path.join(args.out_dir, "saved_model")
    start = time.perf_counter()
    export_saved_model(model, path, config.data)
    return {
        "saved_model": path,
        "export_seconds": round(time.perf_counter() - start, 1),
    }


def _requests(count, images):
    """(kind, list of encoded images) for request 0..count-1."""
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(harness.REPO / "tests" / "support"))
    from image_bombs import jpeg_declaring, png_declaring

    rng = np.random.default_rng(0)
    pool = []
    for i, side in enumerate((12, 16, 20, 28, 32, 48, 64, 96)):
        pixels = rng.integers(0, 256, (side, side + i, 3), dtype=np.uint8)
        encode = tf.io.encode_png if i % 2 else tf.io.encode_jpeg
        pool.append(encode(pixels).numpy())
    corrupt = (pool[0][: len(pool[0]) // 2], b"definitely not an image")
    oversize = (png_declaring(20000, 20000), jpeg_declaring(20000, 20000))
    out = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        valid = [pool[(i + k) % len(pool)] for k in range(images)]
        if kind == "valid":
            out.append((kind, valid))
        elif kind == "corrupt":
            out.append((kind, [valid[0], corrupt[(i // 4) % 2]]))
        else:
            out.append((kind, [valid[0], oversize[(i // 4) % 2]]))
    return out


def _call(fn, tf, images):
    """(seconds, logits or None, error text or None) of one request."""
    start = time.perf_counter()
    try:
        logits = fn(image_bytes=tf.constant(images))["logits"].numpy()
        error = None
    except tf.errors.InvalidArgumentError as e:
        logits, error = None, e.message
    return time.perf_counter() - start, logits, error


def _percentiles(times):
    import numpy as np

    if not times:
        return {}
    ms = np.asarray(times) * 1e3
    return {
        "count": len(times),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def _expected(kind, logits, error, reference):
    """Whether a request's outcome is the right one for its kind."""
    import numpy as np

    if kind == "valid":
        return (
            error is None
            and np.allclose(logits, reference, atol=1e-5, rtol=0)
            and (logits.argmax(1) == reference.argmax(1)).all()
        )
    if kind == "oversize":
        return error is not None and "declares 20000x20000 pixels" in error
    return error is not None


def _load(args):
    """Child: the load test of one SavedModel."""
    tf = harness.import_tensorflow(args.intra, args.inter)
    import numpy as np

    start = time.perf_counter()
    loaded = tf.saved_model.load(args.saved_model)
    fn = loaded.signatures["serving_bytes"]
    load_seconds = time.perf_counter() - start
    total = args.threads * args.requests
    requests = _requests(total, args.images)
    for kind in KINDS:  # warm-up: each kind's path once
        _call(fn, tf, next(r for k, r in requests if k == kind))
    rss_loaded = harness.peak_rss_gb()

    # Sequential reference answers of every valid request.
    reference, seq_times = {}, []
    for i, (kind, images) in enumerate(requests):
        if kind == "valid":
            seconds, reference[i], _ = _call(fn, tf, images)
            seq_times.append(seconds)

    results = [None] * total
    deadline = time.perf_counter() + args.max_seconds

    def worker(t):
        for i in range(t, total, args.threads):
            if time.perf_counter() > deadline:
                return
            results[i] = _call(fn, tf, requests[i][1])

    start = time.perf_counter()
    threads = [
        threading.Thread(target=worker, args=(t,)) for t in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start

    done = [i for i, r in enumerate(results) if r is not None]
    wrong = [
        {"request": i, "kind": requests[i][0], "error": results[i][2]}
        for i in done
        if not _expected(
            requests[i][0], results[i][1], results[i][2], reference.get(i)
        )
    ]
    diffs = [
        float(np.max(np.abs(results[i][1] - reference[i])))
        for i in done
        if requests[i][0] == "valid" and results[i][1] is not None
    ]
    by_kind = {
        kind: _percentiles(
            [results[i][0] for i in done if requests[i][0] == kind]
        )
        for kind in dict.fromkeys(KINDS)
    }
    return {
        "saved_model": args.saved_model,
        "threads": args.threads,
        "requests_planned": total,
        "requests_done": len(done),
        "images_per_valid_request": args.images,
        "load_seconds": round(load_seconds, 2),
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(done) / wall, 1),
        "sequential_valid_requests_per_second": round(
            len(seq_times) / sum(seq_times), 1
        ),
        "all": _percentiles([results[i][0] for i in done]),
        "by_kind": by_kind,
        "same_answers_as_sequential": not wrong,
        "valid_max_abs_diff": max(diffs) if diffs else None,
        "unexpected": wrong[:5],
        "peak_rss_gb_after_load": rss_loaded,
    }


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.child == "export":
        result = _export(args)
        print(json.dumps(result))
        return
    if args.child == "load":
        harness.emit_child(_load(args))
        return
    script = os.path.abspath(__file__)
    passthrough = [
        f"--threads={args.threads}",
        f"--requests={args.requests}",
        f"--max-seconds={args.max_seconds}",
        f"--images={args.images}",
        f"--intra={args.intra}",
        f"--inter={args.inter}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path, exported = args.saved_model, {}
        if path is None:
            exported = harness.run_child(
                script, [*passthrough, f"--out-dir={tmp}"], "export"
            )
            path = exported.get("saved_model")
        if path is None:
            result = exported
        else:
            argv = [*passthrough, f"--saved-model={path}"]
            timeout = args.max_seconds * 3 + 300
            result = harness.run_child(script, argv, "load", timeout=timeout)
            if "export_seconds" in exported:
                result["export_seconds"] = exported["export_seconds"]
        harness.emit("serving_load", [result])


if __name__ == "__main__":
    main()
