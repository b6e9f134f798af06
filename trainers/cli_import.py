"""The `snas import-torch` subcommand: its arguments and its run."""

import os

from snas_tf.trainers.cli_args import job_lock


def import_parser(sub):
    p = sub.add_parser(
        "import-torch",
        help="Import a child network trained by the authors' PyTorch code "
        "as a model directory that `snas export` ships.",
        description="Read an official checkpoint (a state_dict: .npz "
        "without PyTorch, or a torch.save file .pt/.pth/.tar/.ckpt with "
        "the extra snas-tf[torch]), check every tensor against the child "
        "network of --genotype at the sizes of the retrain --config, and "
        "write config.yaml, genotype.json, import.json and model.keras "
        "(no auxiliary head) into --model-dir.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="The official state_dict: .npz, or .pt/.pth/.tar/.ckpt "
        "(torch.save, zip or legacy format; may wrap it under "
        "'state_dict' or 'model'; a 'module.' prefix is removed).",
    )
    p.add_argument(
        "--genotype",
        required=True,
        help="The checkpoint's genotype in the official edge order: "
        "SNAS_{mild,moderate,aggressive}[_edge_all], DARTS_V2 (darts "
        "layout), or the official Genotype(normal=[...], reduce=[...]) "
        "text or a file holding it.",
    )
    p.add_argument(
        "--layout",
        choices=("edge_all", "darts"),
        default="edge_all",
        help="edge_all: model_edge_all.py (SNAS _edge_all genotypes, 14 "
        "edges per cell); darts: model.py (8 edges). Default: edge_all.",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        help="Retrain YAML config giving the network's sizes (e.g. "
        "configs/cifar10_retrain.yaml); repeatable, later ones win.",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Set one config value, e.g. child.num_layers=20; repeatable.",
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help="Output directory (default: runs/import-<timestamp>).",
    )
    return p


def run_import(args):
    import time

    from snas_tf.config import RetrainConfig, load_config
    from snas_tf.config_checks import path_problem
    from snas_tf.torch_checkpoint import check_checkpoint

    config = load_config(args.config, args.override, RetrainConfig)
    # One line, before TensorFlow: a missing file, an unknown suffix, no
    # PyTorch for a torch.save file.
    if not os.path.exists(os.path.expanduser(args.checkpoint)):
        raise ValueError(f"--checkpoint {args.checkpoint!r} does not exist.")
    problem = path_problem(args.checkpoint, directory=False)
    if problem:
        raise ValueError(f"--checkpoint {problem}.")
    check_checkpoint(args.checkpoint)
    model_dir = args.model_dir or os.path.join(
        "runs", time.strftime("import-%Y%m%d-%H%M%S")
    )
    with job_lock(model_dir):
        from snas_tf.trainers.import_torch import run_import_torch  # TF

        summary = run_import_torch(
            config,
            os.path.expanduser(args.checkpoint),
            args.genotype,
            model_dir,
            layout=args.layout,
        )
    print(f"Genotype: {summary['genotype']}")
    print(
        f"Tensors: {summary['tensors_checked']} checked; auxiliary head: "
        f"{summary['auxiliary_head']}"
    )
    print(f"Parameters (no auxiliary head): {summary['parameters'] / 1e6:.2f}M")
    print(f"Outputs written to {summary['model_dir']}")
