"""Writes the child-network parity fixtures from the authors' PyTorch code.

Run by hand, never by `make test` (it needs PyTorch, which the project does
not depend on, and the official code, which the project does not ship):

    python tests/reference/generate_fixtures.py SNAS_DIR

SNAS_DIR is the `SNAS/` folder of the official repository (SNAS-Series,
commit 9a43adb) and the Python running this needs torch and numpy < 2.3.
The official modules are imported unchanged, with the CPU shims of a
harness file given by `--cpu-shims` (by default `run_official_cpu.py`
next to SNAS_DIR), which only redirect CUDA calls to the CPU.

For each case below, it builds the official child network at a tiny width,
seeds torch, gives every BatchNorm non-trivial affine parameters and
running statistics (so that a mixed-up mapping shows), and writes
`fixtures/<case>.npz` with:

- `state/<name>`: the state_dict, float32;
- `input` (N, C, H, W) and `labels`;
- `eval/logits`, `eval/aux_logits`: eval mode (running statistics); the
  official forward computes the auxiliary head only in training, so its
  eval logits are the head applied to the output of cell 2L//3;
- `train/logits`, `train/aux_logits`: train mode (batch statistics),
  drop-path 0;
- `grad/<name>`: the gradient of CE + 0.4 * aux CE (batch means) with
  respect to every parameter, in train mode; for the auxiliary head's
  768-channel conv, `grad_factors/<name>/input` and `/output_grad`
  instead, whose products summed over the batch are that gradient;
- `train_state/<name>`: the BatchNorm running statistics after that one
  train-mode forward;
- `meta`: the case as JSON (module, class, sizes, the official edge lists).

It also writes a tiny official checkpoint for `snas import-torch` in each
format the command reads, and the official eval-mode logits for it
(`write_import_checkpoints`). The legacy torch.save format names each
storage by its memory address, so `import_checkpoint_legacy.pt` differs
in bytes from run to run while holding the same tensors.

The network runs in float64 on float32-exact weights, so the reference
numbers carry no float32 rounding of their own. `fixtures/manifest.json`
records the torch version, the reference commit and the arguments.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import sys

import numpy as np

REFERENCE_COMMIT = "9a43adbdf90d4969b19e448c0d094091bc5efb4f"
AUX_WEIGHT = 0.4
# Batch 8, not 2, where the auxiliary head has a BatchNorm(768): on its 1x1
# maps, 2 samples make train-mode gradients so ill-conditioned that float32
# rounding alone moves them by more than the tests' tolerance
# (docs/parity.md §1).
BATCH = 8
HERE = pathlib.Path(__file__).resolve().parent

# An edge_all genotype that uses every op at both strides, zero edges and
# an empty node at both strides: (op, source) lists in the official order
# (14 edges per cell, node by node; a node's edges in any source order).
COVERAGE = {
    "normal": [
        ("sep_conv_3x3", 0),
        ("avg_pool_3x3", 1),
        ("dil_conv_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("none", 0),
        ("sep_conv_5x5", 1),
        ("dil_conv_5x5", 2),
        ("none", 3),
        ("none", 0),
        ("none", 1),
        ("none", 2),
        ("none", 3),
        ("none", 4),
    ],
    "reduce": [
        ("avg_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 1),
        ("skip_connect", 2),
        ("dil_conv_3x3", 0),
        ("skip_connect", 1),
        ("dil_conv_5x5", 3),
        ("max_pool_3x3", 2),
        ("none", 1),
        ("none", 0),
        ("none", 3),
        ("none", 2),
        ("none", 4),
    ],
}

# Cells L//3 and 2L//3 are reductions in all of them. The ImageNet one
# needs 224x224 inputs (the official AvgPool2d(7) must see a 7x7 map),
# which make most of its file; model_edge_all's ImageNet network differs
# from model.py's only by a BatchNorm less in the auxiliary head, so it
# has no case of its own.
CASES = {
    "cifar_edge_all_coverage": dict(
        module="model_edge_all", network="cifar", genotype="coverage",
        channels=4, layers=5, classes=10, image=32, seed=0, batch=BATCH,
    ),
    "cifar_edge_all_moderate": dict(
        module="model_edge_all", network="cifar",
        genotype="SNAS_moderate_edge_all",
        channels=6, layers=4, classes=7, image=32, seed=1, batch=BATCH,
    ),
    "imagenet_darts_moderate": dict(
        module="model", network="imagenet", genotype="SNAS_moderate",
        channels=8, layers=4, classes=10, image=224, seed=2, batch=4,
    ),
}  # fmt: skip
# The auxiliary head's 128 -> 768 conv on a 2x2 map: its weight is put on a
# coarse grid and its gradient stored as the factors it is summed from
# (below), which keeps each file small.
AUX_CONV2 = "auxiliary_head.features.5"


def _load_shims(path):
    spec = importlib.util.spec_from_file_location("official_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise(model, torch):
    """Non-default BN parameters and statistics, drawn from the seed; every
    tensor then rounded to a bfloat16 value (still exact in float32), which
    halves the compressed size of the weights."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            with torch.no_grad():
                if module.affine:
                    module.weight.copy_(0.5 + torch.rand(n))
                    module.bias.copy_(0.1 * torch.randn(n))
                module.running_mean.copy_(0.1 * torch.randn(n))
                module.running_var.copy_(0.5 + torch.rand(n))
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.to(torch.bfloat16).to(torch.float32))
        weight = model.auxiliary_head.features[5].weight
        weight.copy_(torch.round(weight * 256) / 256)


def _f32(tensor):
    return tensor.detach().numpy().astype(np.float32)


def _build(official, case):
    module = getattr(official, case["module"])
    if case["genotype"] == "coverage":
        genotype = official.genotypes.Genotype(
            normal=COVERAGE["normal"],
            normal_concat=range(2, 6),
            reduce=COVERAGE["reduce"],
            reduce_concat=range(2, 6),
        )
    else:
        genotype = getattr(official.genotypes, case["genotype"])
    cifar = case["network"] == "cifar"
    cls = module.NetworkCIFAR if cifar else module.NetworkImageNet
    args = (case["channels"], case["classes"], case["layers"], True)
    return cls(*args, genotype), genotype


def generate(official, torch, name, case, batch=None):
    """Returns the arrays of one fixture (`batch` overrides the case's)."""
    layers, classes, image = case["layers"], case["classes"], case["image"]
    batch = batch or case["batch"]
    torch.manual_seed(case["seed"])
    model, genotype = _build(official, case)
    _randomise(model, torch)
    model.drop_path_prob = 0.0
    state = {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    model = model.double()
    # Drawn in float32, so that the stored input is the one used. Inputs of
    # fewer bits (bfloat16 values, a 1/32 grid) would store smaller but
    # made float32 gradients miss the tolerance by far (docs/parity.md §1).
    x = torch.randn(batch, 3, image, image).double()
    y = torch.randint(0, classes, (batch,))

    captured = {}
    aux_cell = model.cells[2 * layers // 3]
    hook = aux_cell.register_forward_hook(
        lambda m, i, out: captured.__setitem__("s1", out.detach().clone())
    )
    model.eval()
    with torch.no_grad():
        eval_logits, _ = model(x)
        eval_aux = model.auxiliary_head(captured["s1"].clone())
    hook.remove()

    # The gradient of the aux conv on a 2x2 map (one output pixel) is
    # sum_n dy[n, o] * a[n, i, kh, kw]: its input a and output gradient dy
    # are far smaller than it. The hook passes a copy on, so that the
    # in-place ReLU after the conv (model_edge_all's ImageNet head) leaves
    # the output whose gradient is taken alone.
    factors = {}

    def keep_factors(module, inputs, output):
        factors["input"] = inputs[0].detach().clone()
        output.register_hook(lambda g: factors.__setitem__("dy", g.clone()))
        return output.clone()

    hook = model.auxiliary_head.features[5].register_forward_hook(keep_factors)
    model.train()
    train_logits, train_aux = model(x)
    loss = torch.nn.functional.cross_entropy(train_logits, y)
    loss = loss + AUX_WEIGHT * torch.nn.functional.cross_entropy(train_aux, y)
    loss.backward()
    hook.remove()
    a, dy = factors["input"], factors["dy"]
    assert a.shape[2:] == (2, 2) and dy.shape[2:] == (1, 1), (a.shape, dy.shape)
    grad = model.auxiliary_head.features[5].weight.grad
    assert torch.allclose(
        torch.einsum("no,nikl->oikl", dy[:, :, 0, 0], a), grad, rtol=1e-9
    )

    out = {f"state/{k}": v.numpy().astype(np.float32) for k, v in state.items()}
    out["input"] = x.numpy().astype(np.float32)
    out["labels"] = y.numpy().astype(np.int64)
    out["eval/logits"] = _f32(eval_logits)
    out["eval/aux_logits"] = _f32(eval_aux)
    out["train/logits"] = _f32(train_logits)
    out["train/aux_logits"] = _f32(train_aux)
    out["train/loss"] = _f32(loss)
    for k, p in model.named_parameters():
        if k != f"{AUX_CONV2}.weight":
            out[f"grad/{k}"] = _f32(p.grad)
    # float64: the test sums the products itself.
    out[f"grad_factors/{AUX_CONV2}.weight/input"] = a.numpy()
    out[f"grad_factors/{AUX_CONV2}.weight/output_grad"] = dy.numpy()
    for k, v in model.state_dict().items():
        if "running" in k:
            out[f"train_state/{k}"] = _f32(v)
    meta = {
        "case": name,
        **case,
        "batch": batch,
        "aux_weight": AUX_WEIGHT,
        "normal": [list(e) for e in genotype.normal],
        "reduce": [list(e) for e in genotype.reduce],
    }
    out["meta"] = np.asarray(json.dumps(meta))
    return out, meta


# `snas import-torch` (docs/parity.md §3): a tiny official checkpoint in
# each format the command reads, and what the official model computes.
IMPORT_CASE = dict(
    module="model_edge_all", network="cifar",
    genotype="SNAS_moderate_edge_all",
    channels=4, layers=5, classes=10, image=32, seed=3, batch=2,
)  # fmt: skip


def write_import_checkpoints(official, torch, out):
    """Writes `import_checkpoint.npz` (the whole state_dict, auxiliary
    head included), `import_checkpoint.pt` (torch.save, zip format) and
    `import_checkpoint_legacy.pt` (the pre-1.6 format of the authors'
    released model) without the auxiliary head (its 128 -> 768 conv alone
    is 1.5 MB uncompressed; eval logits do not use it), and
    `import_expected.npz`: an input batch and the official eval-mode
    logits (float64 forward, stored float32). Returns the case's meta."""
    case = IMPORT_CASE
    torch.manual_seed(case["seed"])
    model, genotype = _build(official, case)
    _randomise(model, torch)
    model.drop_path_prob = 0.0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.randn(case["batch"], 3, case["image"], case["image"])
    model = model.double().eval()
    with torch.no_grad():
        logits, _ = model(x.double())
    np.savez_compressed(
        os.path.join(out, "import_checkpoint.npz"),
        **{k: v.numpy() for k, v in state.items()},
    )
    plain = {k: v for k, v in state.items() if "auxiliary_head" not in k}
    torch.save(plain, os.path.join(out, "import_checkpoint.pt"))
    torch.save(
        plain,
        os.path.join(out, "import_checkpoint_legacy.pt"),
        _use_new_zipfile_serialization=False,
    )
    meta = {
        **case,
        "normal": [list(e) for e in genotype.normal],
        "reduce": [list(e) for e in genotype.reduce],
    }
    np.savez_compressed(
        os.path.join(out, "import_expected.npz"),
        input=x.numpy(),
        logits=_f32(logits),
        meta=np.asarray(json.dumps(meta)),
    )
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snas_dir", help="the official SNAS/ folder")
    parser.add_argument(
        "--cpu-shims",
        help="harness with install_cpu_shims(snas_dir) (default: "
        "run_official_cpu.py next to SNAS_DIR)",
    )
    parser.add_argument(
        "--out", default=str(HERE / "fixtures"), help="output folder"
    )
    parser.add_argument(
        "--batch", type=int, help="batch size of every case's input"
    )
    parser.add_argument(
        "--checkpoints",
        metavar="DIR",
        help="also torch.save each case's state_dict to DIR/<case>.pt "
        "(zip format; not part of the fixtures)",
    )
    parser.add_argument(
        "--cases",
        nargs="*",
        default=list(CASES),
        help=f"cases to write, of {list(CASES)}",
    )
    args = parser.parse_args(argv)
    snas_dir = os.path.abspath(args.snas_dir)
    shims_path = args.cpu_shims or os.path.join(
        os.path.dirname(snas_dir), "run_official_cpu.py"
    )
    import torch

    torch.set_num_threads(1)
    official = _load_shims(shims_path).install_cpu_shims(snas_dir)
    os.makedirs(args.out, exist_ok=True)
    manifest = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "reference": "SNAS-Series/SNAS-Series, SNAS/",
        "reference_commit": REFERENCE_COMMIT,
        "command": " ".join(
            ["python tests/reference/generate_fixtures.py SNAS_DIR"]
            + (["--batch", str(args.batch)] if args.batch else [])
            + (["--cases", *args.cases] if args.cases != list(CASES) else [])
        ),
        "cases": {},
    }
    for name in args.cases:
        if name not in CASES:
            parser.error(
                f"unknown case {name!r}; expected one of {list(CASES)}"
            )
        print(f"{name} ...", file=sys.stderr, flush=True)
        arrays, meta = generate(official, torch, name, CASES[name], args.batch)
        np.savez_compressed(os.path.join(args.out, f"{name}.npz"), **arrays)
        if args.checkpoints:
            os.makedirs(args.checkpoints, exist_ok=True)
            state = {
                k.removeprefix("state/"): torch.from_numpy(v)
                for k, v in arrays.items()
                if k.startswith("state/")
            }
            torch.save(state, os.path.join(args.checkpoints, f"{name}.pt"))
        manifest["cases"][name] = meta
    manifest["import_checkpoint"] = write_import_checkpoints(
        official, torch, args.out
    )
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
