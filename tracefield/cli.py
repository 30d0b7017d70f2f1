"""``tracefield <verb>``: argument parsing and wiring only; the work lives in the modules.

Every user-facing failure is a :class:`TracefieldError`: printed as one ``error:`` line,
exit status 2. Interrupts exit 130. Nothing else is caught.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from tracefield.errors import TracefieldError

log = logging.getLogger("tracefield")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

UNTRAINED_BANNER = """!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  UNTRAINED WEIGHTS: the network is randomly initialised (--random-weights).
!!  Its trajectories are noise. This run only shows that the pipeline works.
!!  For real results: `tracefield download` (public weights, non-commercial)
!!  or pass --checkpoint PATH.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""

INFER_EPILOG = """\
inputs:
  a folder of frames          tracefield infer clips/elephant/
  a folder of scene folders   tracefield infer clips/            (each subfolder, and each video, is a scene)
  a video (mp4/mov/webm/gif)  tracefield infer dance.mp4 --max-frames 32
  image files                 tracefield infer shots/a.png shots/b.png --name shots

outputs, per scene in --output/<scene>/:
  field.safetensors  compact field (fp16 control points, confidences, times, frames, masks,
                     and the preprocessing transform back to original pixels)
  output.pt          the public release's layout (read by its viewer and scripts)
  images/NNN.png     the frames the network saw;  masks/NNN.png  automatic foreground

Frames are resized to a long side of 512, cropped to multiples of 16 and, if portrait,
rotated to landscape, as in the release; the transform is recorded so exports map back.
Long clips: --max-frames picks that many frames evenly (first and last included).
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return args.run(args)
    except TracefieldError as exc:
        log.error("%s", exc)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        log.error("interrupted; outputs of unfinished scenes were not written")
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracefield",
        description="4D video analysis with Trace Anything trajectory fields.",
        epilog="quick start:\n  tracefield download                 # public weights (2.7 GB, non-commercial)\n"
        "  tracefield infer clip.mp4 -o out    # -> out/clip/field.safetensors, output.pt, preview.png\n\n"
        "Run `tracefield <verb> --help` for each verb's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(title="verbs", metavar="<verb>", required=True)
    _add_infer(verbs)
    _add_download(verbs)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")


def _add_infer(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "infer",
        help="video or frames -> trajectory field",
        description="Run the Trace Anything network: every pixel of every frame gets a 3D trajectory "
        "(a cubic B-spline of K control points) with confidences.",
        epilog=INFER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, help="frame folder(s), a folder of scenes, video file(s) or image files")
    p.add_argument("-o", "--output", type=Path, default=Path("outputs"), help="output folder (default: outputs/)")
    p.add_argument("--config", default="eval", help="bundled config name (eval, small) or a YAML path; default: eval (full size)")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path, help="weights (.safetensors/.pt/.pth/.ckpt); default: the config's checkpoint")
    weights.add_argument("--random-weights", action="store_true", help="untrained random weights: to test the pipeline only")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default=None, help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16")
    p.add_argument("--attention", default=None, help="auto, flash_attn, sdpa or math (default: the config's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA; only pays off over many scenes)")
    p.add_argument("--max-frames", type=int, default=40, help="frames per pass, picked evenly (default: 40)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame before picking (default: 1)")
    p.add_argument("--name", help="scene name (a single scene only; default: folder or video name)")
    p.add_argument("--local-head", action="store_true", help="also keep the local head's control points (each frame's own camera)")
    p.add_argument("--no-output-pt", action="store_true", help="skip the release-format output.pt (field.safetensors only)")
    p.add_argument("--field-float32", action="store_true", help="store control points in float32 instead of float16")
    _common(p)
    p.set_defaults(run=_run_infer)


def _add_download(verbs: argparse._SubParsersAction) -> None:
    from tracefield.model.download import HF_FILENAME, HF_REPO

    p = verbs.add_parser(
        "download",
        help="fetch the public checkpoint and convert it to safetensors",
        description=f"Download {HF_FILENAME} from the Hugging Face repo {HF_REPO} (about 2.7 GB, CC BY-NC 4.0), "
        "check every weight against the full-size network, and store it as trace_anything.safetensors.",
        epilog="Offline? Put the file at <dest>/trace_anything.pt by hand (or pass --source) and run this again.",
    )
    p.add_argument("--dest", type=Path, default=None, help="checkpoint folder (default: checkpoints/ or $TRACEFIELD_HOME/checkpoints)")
    p.add_argument("--source", type=Path, default=None, help="convert this local .pt/.pth/.ckpt instead of downloading")
    p.add_argument("--repo", default=HF_REPO, help=f"Hugging Face repo (default: {HF_REPO})")
    p.add_argument("--filename", default=HF_FILENAME, help=f"file in the repo (default: {HF_FILENAME})")
    _common(p)
    p.set_defaults(run=_run_download)


class _ConsoleFormatter(logging.Formatter):
    """Plain messages for progress; ``warning:``/``error:`` prefixes where the user must look."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ConsoleFormatter("%(name)s: %(message)s" if verbose else "%(message)s"))
    ours = logging.getLogger("tracefield")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False  # libraries (huggingface_hub, ...) keep their own handlers


def _run_infer(args: argparse.Namespace) -> int:
    import torch

    from tracefield.infer import InferOptions, plan_scenes, run_infer
    from tracefield.model import load_model
    from tracefield.paths import config_path

    options = InferOptions(
        max_frames=args.max_frames,
        stride=args.stride,
        release_output=not args.no_output_pt,
        local_head=args.local_head,
        field_dtype=torch.float32 if args.field_float32 else torch.float16,
        progress=not args.quiet,
    )
    plans = plan_scenes(args.inputs, options, name=args.name)  # bad input fails before the model loads
    config = config_path(args.config)
    checkpoint = None if args.random_weights else (args.checkpoint or _config_checkpoint(config))
    model = load_model(config, checkpoint, device=args.device, dtype=args.dtype, attention=args.attention)
    if model.untrained:
        log.warning(UNTRAINED_BANNER)
    param = next(model.parameters())
    if args.compile and param.device.type == "cuda":
        model.compile_parts()
    log.info("model %s on %s (%s, attention %s)", config, param.device, str(param.dtype).replace("torch.", ""), model.attention_backend)
    scenes = run_infer(model, plans, args.output, options)
    log.info("done: %d scene(s) in %s", len(scenes), args.output)
    if model.untrained:
        log.warning("reminder: these fields come from UNTRAINED random weights")
    return 0


def _config_checkpoint(config: Path) -> Path:
    from tracefield.model.config import load_config

    cfg = load_config(config)
    if cfg.checkpoint is None:
        raise TracefieldError(f"{config}: names no checkpoint; pass --checkpoint PATH (or --random-weights to test the pipeline)")
    path = Path(cfg.checkpoint)
    if not path.is_file():
        raise TracefieldError(
            f"{path}: checkpoint not found; run `tracefield download` for the public weights, "
            "pass --checkpoint PATH, or --random-weights to test the pipeline"
        )
    return path


def _run_download(args: argparse.Namespace) -> int:
    from tracefield.model.download import download_checkpoint

    out = download_checkpoint(dest_dir=args.dest, repo=args.repo, filename=args.filename, source=args.source)
    log.info("ready: %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
