"""Writes the search-supernet parity fixture from the authors' PyTorch code.

Run by hand, never by `make test` (it needs PyTorch and the official code,
as `generate_fixtures.py` does):

    python tests/reference/generate_search_fixtures.py SNAS_DIR

It builds the official `model_search.Network` in SNAS mode with the search
flags of the official README (reparametrization of the log penalty,
resource_lambda 1.5e-3, temperature annealing, no auxiliary head), 8 cells
(where the official /6 and /2 cost normalisation is the per-cell-count
mean), drop-path 0, and the `--distributed` branch of `train_search.py` at
world size 1 (a one-process gloo group): momentum SGD on θ, Adam with
betas (0.5, 0.999) on α. The step is the official one:
`neural_architecture_search.train` is taken from `train_search.py` (its
class only: the module itself needs CUDA, tensorboardX and scipy at
import) and run for one batch, so the forward pass, the penalty, the
backward passes, the clipping and both optimizer steps are the authors'.
Only its logged top-5 accuracy, read after the update, takes a
`reshape` where the official `view` fails on recent torch.

The weights are randomised and rounded to bfloat16 values as in
`generate_fixtures.py`; log α is drawn from N(0, 0.5²) (not the
N(1, 0.01) initialisation, so that the softmax is not flat) and rounded
the same way. The network then runs in float64 at temperature 0.7, where
with the fixture's noise no clamp of the official Concrete density acts
(checked). One step is run per resource estimator
(`ESTIMATORS`), each from the same state with the same Gumbel noise
(torch is reseeded before each). `fixtures/supernet_snas.npz` holds:

- `state/<name>`: the state_dict before the step, float32 (log α as
  `normal_log_alpha`, `reduce_log_alpha`);
- `input` (N, 3, 32, 32), `labels`, `temperature`;
- `uniform/{normal,reduce}`: the U the official sampler drew, and
  `noise/{normal,reduce}`: its Gumbel noise -log(-log U) (float64);
- `logits`, `ce`: the forward pass and its cross-entropy;
- `grad/<name>`: the gradient of CE + η·penalty for every weight θ (the
  penalty does not depend on θ: the same under every estimator, which the
  generator checks), `update/<name>`: θ after the step minus θ before;
- `train_state/<name>`: the BatchNorm running statistics after the step;
- `grad_ce/<α>`: the gradient of CE alone for both log α tensors (the
  official error-loss backward pass);
- per estimator E: `E/penalty` (the official normal/6 + reduce/2 log
  penalty; for policy_gradient the score-function surrogate), and for
  both log α tensors `E/grad/<α>` (of CE + η·penalty), `E/grad_penalty/<α>`
  (of η·penalty: the official resource-loss backward pass) and
  `E/update/<α>`;
- `policy_gradient/score_grad/<α>`: the gradient of η·penalty under
  policy_gradient with the sample Z detached from log α where the
  official sampler returns it (`.detach()` around `_get_weights`, plus
  0 · log α for the official gradient logging): the score-function term
  alone. The official gradient also flows
  through Z into the Concrete log-density; ours treats Z as data
  (docs/decisions.md);
- `meta`: the case as JSON.

`fixtures/search_manifest.json` records the torch version, the reference
commit and the arguments.
"""

import argparse
import ast
import json
import logging
import os
import pathlib
import sys
import types

import numpy as np
from generate_fixtures import REFERENCE_COMMIT, _f32, _load_shims

HERE = pathlib.Path(__file__).resolve().parent
REGENERATE = "python tests/reference/generate_search_fixtures.py SNAS_DIR"
ESTIMATORS = ("reparametrization", "discrete", "policy_gradient")
# The README's search command (SNAS/README.md), at a tiny width.
README_FLAGS = [
    "--snas", "--epochs", "150", "--seed", "6", "--layers", "8",
    "--init_channels", "16", "--temp", "1", "--temp_min", "0.03",
    "--nsample", "1", "--temp_annealing", "--resource_efficient",
    "--resource_lambda", "1.5e-3", "--log_penalty", "--drop_path_prob",
    "3e-1", "--method", "reparametrization", "--loss",
]  # fmt: skip
CASE = dict(
    name="supernet_snas", channels=4, layers=8, classes=10, image=32,
    batch=2, seed=3, alpha_std=0.5, temperature=0.7, noise_seed=11, data_seed=5,
)  # fmt: skip
# What the official train() reads from total_penalty per method: the
# normal and reduction log penalties (train_search.py).
LOG_PENALTY_SLOTS = {
    "policy_gradient": (35, 36),
    "reparametrization": (37, 38),
    "discrete": (39, 40),
}
CONCRETE_CLAMP = 1e-4


def official_args(snas_dir, case, method):
    """train_search.py's own parser (its add_argument block) on the README
    flags, with the fixture's sizes, drop-path 0 and `--distributed`."""
    path = os.path.join(snas_dir, "train_search.py")
    tree = ast.parse(pathlib.Path(path).read_text(), path)
    body, started = [], False
    for node in tree.body:
        text = ast.unparse(node)
        started = started or text.startswith("parser = argparse")
        if "parser.parse_args" in text:
            break
        if started:
            body.append(node)
    ns = {"argparse": argparse}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), ns)
    return ns["parser"].parse_args(
        README_FLAGS
        + ["--layers", str(case["layers"]), "--batch_size", str(case["batch"])]
        + ["--init_channels", str(case["channels"]), "--method", method]
        + ["--drop_path_prob", "0", "--distributed"]
    )


def official_search_class(snas_dir, namespace):
    """The `neural_architecture_search` class of train_search.py, run in
    `namespace` (its module globals)."""
    path = os.path.join(snas_dir, "train_search.py")
    tree = ast.parse(pathlib.Path(path).read_text(), path)
    (cls,) = [
        n
        for n in tree.body
        if isinstance(n, ast.ClassDef)
        and n.name == "neural_architecture_search"
    ]
    exec(
        compile(ast.Module(body=[cls], type_ignores=[]), path, "exec"),
        namespace,
    )
    return namespace["neural_architecture_search"]


class _NullWriter:
    def add_scalar(self, *args, **kwargs):
        pass


class _Queue(list):
    """One batch, with the `.dataset` the official logging reads."""

    @property
    def dataset(self):
        return range(sum(len(y) for _, y in self))


def _utils_view(utils):
    """The official utils with `accuracy` (a logged metric, read after the
    update) taking `reshape` where its `view` fails on recent torch for
    top-5 of a batch."""

    def accuracy(output, target, topk=(1,)):
        _, pred = output.topk(max(topk), 1, True, True)
        correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
        return [
            correct[:k].reshape(-1).float().sum(0) * (100.0 / len(target))
            for k in topk
        ]

    return types.SimpleNamespace(**{**vars(utils), "accuracy": accuracy})


def _randomise(model, torch, seed, std):
    """Non-default BN statistics (and stem BN affine parameters), log α
    from N(0, 1); every tensor rounded to a bfloat16 value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                if module.affine:
                    module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                    module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
        for alpha in model.arch_parameters():
            alpha.copy_(std * torch.randn(alpha.shape, generator=gen))
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.to(torch.bfloat16).to(torch.float32))


def _build(official, torch, snas_dir, case):
    """The official search object (train_search.py's class, its __init__
    skipped: it needs CUDA and writes an experiment folder) with the
    fixture's network."""
    import dist_util_torch  # on sys.path once the shims are installed

    namespace = {
        "torch": torch,
        "nn": torch.nn,
        "np": np,
        "os": os,
        "sys": sys,
        "logging": logging,
        "utils": _utils_view(official.utils),
        "dist": torch.distributed,
        "reduce_tensorgradients": dist_util_torch.reduce_tensorgradients,
        "broadcast_params": dist_util_torch.broadcast_params,
        "Network": official.model_search.Network,
        "CIFAR_CLASSES": case["classes"],
    }
    cls = official_search_class(snas_dir, namespace)
    nas = object.__new__(cls)
    nas.args = namespace["args"] = official_args(snas_dir, case, ESTIMATORS[0])
    nas.rank, nas.world_size = 0, 1
    nas.device = torch.device("cpu")
    nas.logger = _NullWriter()
    nas.update_theta = nas.update_alpha = True
    nas.criterion = torch.nn.CrossEntropyLoss()
    torch.manual_seed(case["seed"])
    nas.init_model()
    return nas


def _step(torch, nas, method, state, x, y, case, data_sample=False):
    """One official train() step with `method`, from `state`; returns what
    it computed. The gradients are those of its three backward passes in
    order: resource loss, error loss, their sum (θ: the last two).
    `data_sample` detaches the sample Z from log α where the official
    sampler returns it: the penalty's gradient is then the score-function
    term alone."""
    if data_sample:
        sample = nas.model._get_weights
        # + 0 * log α: the official logging then finds a (zero) gradient
        # of the error loss on log α.
        nas.model._get_weights = lambda log_alpha: (
            sample(log_alpha).detach() + 0.0 * log_alpha
        )
    nas.args.method = nas.model._method = method
    nas.model.load_state_dict(state)
    nas.model._temp = case["temperature"]
    nas.init_optimizer()
    nas.train_queue = _Queue([(x, y)])
    recorded = {}
    hook = nas.model.register_forward_hook(
        lambda m, i, out: recorded.__setitem__("out", out)
    )
    params = dict(nas.model.named_parameters())
    grads, handles = {k: [] for k in params}, []
    for name, p in params.items():
        handles.append(
            p.register_hook(lambda g, n=name: grads[n].append(g.clone()))
        )
    before = {k: v.detach().clone() for k, v in params.items()}
    criterion = nas.criterion
    ces = []

    def recording_criterion(logits, target):
        ces.append(criterion(logits, target).detach().clone())
        return criterion(logits, target)

    nas.criterion = recording_criterion
    torch.manual_seed(case["noise_seed"])
    _, loss, error_loss, _ = nas.train(0, logging.getLogger("official"))
    nas.criterion = criterion
    if data_sample:
        del nas.model._get_weights
    hook.remove()
    for h in handles:
        h.remove()
    logits, _, penalty = recorded["out"][:3]
    n, r = LOG_PENALTY_SLOTS[method]
    value = penalty[n] / 6 + nas.args.ratio * penalty[r] / 2
    eta = nas.model._resource_lambda
    assert torch.allclose(loss - error_loss, eta * value, rtol=1e-12)
    return {
        "logits": logits.detach(),
        "ce": ces[0],
        "penalty": value.detach(),
        "grads": grads,
        "update": {k: params[k].detach() - v for k, v in before.items()},
        "state": {k: v.clone() for k, v in nas.model.state_dict().items()},
        "weights": (nas.model.normal_weights, nas.model.reduce_weights),
    }


def _noise(torch, model, case):
    """The U the official sampler drew after seeding with `noise_seed`
    (normal, then reduce; `_get_categ_mask`), checked against the Z of the
    forward pass."""
    torch.manual_seed(case["noise_seed"])
    out = {}
    for cell in ("normal", "reduce"):
        alpha = getattr(model, f"{cell}_log_alpha")
        out[cell] = torch.zeros_like(alpha).uniform_()
    return out


def generate(official, torch, snas_dir, case):
    nas = _build(official, torch, snas_dir, case)
    model = nas.model
    _randomise(model, torch, case["seed"], case["alpha_std"])
    state32 = {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    model.double()
    state = model.state_dict()
    state = {k: v.detach().clone() for k, v in state.items()}
    gen = torch.Generator().manual_seed(case["data_seed"])
    x = torch.randn(
        case["batch"], 3, case["image"], case["image"], generator=gen
    )
    y = torch.randint(0, case["classes"], (case["batch"],), generator=gen)
    x = x.double()

    runs = {m: _step(torch, nas, m, state, x, y, case) for m in ESTIMATORS}
    score = _step(torch, nas, "policy_gradient", state, x, y, case, True)
    uniform = _noise(torch, model, case)
    temp = case["temperature"]
    ref = runs[ESTIMATORS[0]]
    for i, cell in enumerate(("normal", "reduce")):
        alpha = state[f"{cell}_log_alpha"]
        g = -torch.log(-torch.log(uniform[cell]))
        z = torch.softmax((alpha + g) / temp, dim=-1)
        assert torch.allclose(z, ref["weights"][i], rtol=1e-12, atol=0)
        # policy_gradient: no clamp of the official log-density bites.
        terms = z ** (-temp) * torch.exp(alpha)
        assert z.min() > CONCRETE_CLAMP and terms.min() > CONCRETE_CLAMP
    theta = [k for k in ref["grads"] if not k.endswith("log_alpha")]
    alphas = [f"{cell}_log_alpha" for cell in ("normal", "reduce")]
    for m, run in runs.items():
        assert torch.equal(run["logits"], ref["logits"]), m
        for k in theta:
            # Error loss, then the sum: the penalty has no θ gradient.
            first, total = run["grads"][k]
            assert torch.equal(first, total), (m, k)
            assert torch.equal(total, ref["grads"][k][-1]), (m, k)
            assert torch.equal(run["update"][k], ref["update"][k]), (m, k)
        for k in alphas:
            penalty, ce, total = run["grads"][k]
            assert torch.allclose(penalty + ce, total, rtol=1e-12), (m, k)
            assert torch.equal(ce, ref["grads"][k][1]), (m, k)

    out = {
        f"state/{k}": v.numpy().astype(np.float32) for k, v in state32.items()
    }
    out["input"] = x.numpy().astype(np.float32)
    out["labels"] = y.numpy().astype(np.int64)
    out["temperature"] = np.asarray(temp, dtype=np.float64)
    for cell in ("normal", "reduce"):
        out[f"uniform/{cell}"] = uniform[cell].numpy()
        out[f"noise/{cell}"] = (-torch.log(-torch.log(uniform[cell]))).numpy()
    out["logits"] = _f32(ref["logits"])
    out["ce"] = _f32(ref["ce"])
    for k in theta:
        out[f"grad/{k}"] = _f32(ref["grads"][k][-1])
        out[f"update/{k}"] = _f32(ref["update"][k])
    for k in alphas:
        out[f"grad_ce/{k}"] = _f32(ref["grads"][k][1])
        out[f"policy_gradient/score_grad/{k}"] = _f32(score["grads"][k][0])
    for k, v in ref["state"].items():
        if "running" in k:
            out[f"train_state/{k}"] = _f32(v)
    for m, run in runs.items():
        out[f"{m}/penalty"] = _f32(run["penalty"])
        for cell in ("normal", "reduce"):
            k = f"{cell}_log_alpha"
            out[f"{m}/grad/{k}"] = _f32(run["grads"][k][-1])
            out[f"{m}/grad_penalty/{k}"] = _f32(run["grads"][k][0])
            out[f"{m}/update/{k}"] = _f32(run["update"][k])
    a = nas.args
    meta = {
        **case,
        "estimators": list(ESTIMATORS),
        "resource_lambda": a.resource_lambda,
        "learning_rate": a.learning_rate,
        "momentum": a.momentum,
        "weight_decay": a.weight_decay,
        "grad_clip": a.grad_clip,
        "arch_learning_rate": a.arch_learning_rate,
        "arch_weight_decay": a.arch_weight_decay,
        "arch_betas": [0.5, 0.999],
        "arch_grad_clip": 10.0,
        "bn_momentum": 0.1,
        "bn_eps": 1e-5,
    }
    out["meta"] = np.asarray(json.dumps(meta))
    return out, meta


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
    args = parser.parse_args(argv)
    snas_dir = os.path.abspath(args.snas_dir)
    shims_path = args.cpu_shims or os.path.join(
        os.path.dirname(snas_dir), "run_official_cpu.py"
    )
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    official = _load_shims(shims_path).install_cpu_shims(snas_dir)
    # The distributed branch at world size 1: its all-reduces are copies.
    dist.init_process_group(
        "gloo", store=dist.HashStore(), rank=0, world_size=1
    )
    os.makedirs(args.out, exist_ok=True)
    arrays, meta = generate(official, torch, snas_dir, CASE)
    np.savez_compressed(os.path.join(args.out, f"{CASE['name']}.npz"), **arrays)
    manifest = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "reference": "SNAS-Series/SNAS-Series, SNAS/",
        "reference_commit": REFERENCE_COMMIT,
        "command": REGENERATE,
        "readme_flags": README_FLAGS,
        "cases": {CASE["name"]: meta},
    }
    with open(os.path.join(args.out, "search_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
