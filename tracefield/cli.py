"""``tracefield <verb>``: argument parsing and wiring only; the work lives in the modules.

Every user-facing failure is a :class:`TracefieldError`: printed as one ``error:`` line,
exit status 2. Interrupts exit 130. Nothing else is caught.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from tracefield.errors import TracefieldError

if TYPE_CHECKING:  # the CLI imports the model lazily, to start fast
    import torch

    from tracefield.distributed import World
    from tracefield.model.config import ModelConfig
    from tracefield.runner import RunSummary
    from tracefield.stages import Stages

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
  a video (mp4/mov/webm/gif)  tracefield infer dance.mp4 --max-frames 32 --start 2 --end 6
  image files                 tracefield infer shots/a.png shots/b.png --name shots
  videos sharing a name       tracefield infer a.mp4 a.gif       (-> scenes a_mp4, a_gif)

outputs, per scene in --output/<scene>/:
  field.safetensors  compact field (fp16 control points, log-confidences, times, frames, masks,
                     and the preprocessing transform back to original pixels)
  images/NNN.png     the frames the network saw;  masks/NNN.png  automatic foreground
  preview.png        a glance at the result
  output.pt          with --output-pt only: the public release's layout (fp32, ~1 GB for 40 frames)

Many clips: scenes already traced in --output are skipped (--overwrite traces them again),
so an interrupted run resumes; a scene that fails is reported and the others go on.
Many GPUs: torchrun --nproc_per_node 8 -m tracefield infer clips/ -o out  (one GPU per process,
scenes dealt by frame count; across nodes with torchrun's --nnodes/--rdzv-endpoint).

Frames are resized to a long side of 512 (--resolution), cropped to multiples of 16 and, if
portrait, rotated to landscape, as in the release; the transform is recorded so exports map
back. Long clips: --max-frames picks that many frames evenly (first and last included).
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed command line: its verb's exit status, errors as one line (what each process of ``--gpus`` runs)."""
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
        "  tracefield infer clip.mp4 -o out    # -> out/clip/field.safetensors, preview.png, images/, masks/\n\n"
        "Run `tracefield <verb> --help` for each verb's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(title="verbs", metavar="<verb>", required=True)
    _add_infer(verbs)
    _add_view(verbs)
    _add_export(verbs)
    _add_generate(verbs)
    _add_train(verbs)
    _add_eval(verbs)
    _add_download(verbs)
    return parser


def _field_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("field", type=Path, help="a scene folder from `tracefield infer`, a field.safetensors or an output.pt")


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
    p.add_argument("--config", default=None,
                   help="bundled config name (eval, small) or a YAML path; default: the one stored in --checkpoint, else eval (full size)")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path, help="weights (.safetensors/.pt/.pth/.ckpt); default: the config's checkpoint")
    weights.add_argument("--random-weights", action="store_true", help="untrained random weights: to test the pipeline only")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default=None, help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16")
    p.add_argument("--attention", default=None, help="auto, flash_attn, sdpa or math (default: the config's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA; only pays off over many scenes)")
    p.add_argument("--max-frames", type=int, default=40, help="frames per pass, picked evenly (default: 40)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame before picking (default: 1)")
    p.add_argument("--start", type=float, help="videos: first second to use (default: the start)")
    p.add_argument("--end", type=float, help="videos: last second to use (default: the end)")
    p.add_argument("--resolution", type=int, help="long side the frames are resized to (default: the config's, 512 for the full network)")
    p.add_argument("--name", help="scene name (a single scene only; default: folder or video name)")
    p.add_argument("--overwrite", action="store_true", help="trace scenes again whose folder in --output is finished (default: skip them)")
    p.add_argument("--local-head", action="store_true", help="also run the local head and keep its control points (each frame's own camera; about 7%% more GPU time)")
    p.add_argument("--output-pt", action="store_true", help="also write the release's output.pt (fp32, about 1 GB for 40 frames at 512x288)")
    p.add_argument("--field-float32", action="store_true", help="store control points in float32 instead of float16")
    p.add_argument("--profile", nargs="?", const="", metavar="JSON", help="log seconds per stage at the end (and write them to JSON)")
    _common(p)
    p.set_defaults(run=_run_infer)


EXPORT_EPILOG = """\
examples:
  tracefield export outputs/elephant --format ati --prompt "an elephant walks" -o exports/
  tracefield export outputs/elephant --format worldcanvas --caption 1="the elephant turns left"
  tracefield export outputs/corgi --format wanmove --select grid --region all --grid-step 48
  tracefield export outputs/clip --format ati --pixels "640,360 700,380" --camera orbit.yaml
  tracefield export outputs/clip --format ati --image edited_first_frame.png --prompt "a robot walks"
  tracefield export outputs/clip --format npz --camera filmed --frames 60 --fps 30

Tracks start on --frame (its image is the first frame the generator sees) and pass exactly
through the picked pixels there; the rest of each track follows the field.
cameras: static (the picked frame's camera), filmed (per-frame poses estimated from the
field), or a YAML path such as  orbit: {degrees: 30}  dolly: {amount: 0.2}  zoom: {factor: 1.3}
--image: motion transfer; the conditions are written for an edited first frame (same view,
restyled or with an object replaced), in its pixels. Another aspect ratio is cover-fitted.
Tracks a generator would misread (hidden or off the image on the first frame) are left out
and counted. Every export also writes <name>_tracks.png and <name>_tracks.mp4: what the file holds.
"""


VIEW_EPILOG = """\
examples:
  tracefield view outputs/clip                      # a scene folder from `tracefield infer`
  tracefield view outputs/clip/output.pt --ds 2     # the release's file; every 2nd pixel
  tracefield view outputs/clip --port 8030 --t-step 0.05

on a GPU server, view from your laptop through SSH (the viewer prints this line):
  ssh -N -L 8020:localhost:8020 you@server          # then open http://localhost:8020

In the browser: scrub or play the time slider; filter points by confidence; build
trajectories for frames such as 0,mid,last (coloured by time, speed or image colour);
click a camera frustum's image (or type a pixel) to add that pixel's or object's
trajectory; Export writes generator conditions and downloads them; Record saves a
.viser recording and a self-contained HTML page under the scene folder.
"""


def _add_view(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "view",
        help="explore a field in the browser: points over time, trajectories, masks, cameras",
        description="Serve a web viewer (viser) of a traced scene: static background and moving points "
        "scrubbed in continuous time, trajectories with fading trails, camera frustums, picking, "
        "exports and recordings.",
        epilog=VIEW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _field_argument(p)
    p.add_argument("--port", type=int, default=8020, help="port (default: 8020; the next free one if busy)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, reach it through an SSH tunnel); "
                   "0.0.0.0 exposes it to the network WITHOUT authentication")
    p.add_argument("--t-step", "--t_step", dest="t_step", type=float, default=0.025,
                   help="sample step of trajectories in clip time, through the frame times (default: 0.025)")
    p.add_argument("--ds", type=int, default=1, help="use every ds-th pixel in each direction (default: 1, all)")
    p.add_argument("--max-points", type=int, default=1_500_000,
                   help="static background point budget (default: 1.5 M; frames interleave pixels beyond it)")
    p.add_argument("--trajectories", default="0,mid,last", help="frames whose moving pixels get trajectories at start: indices, ranges a-b, first, mid, last "
                   "(default: 0,mid,last; none for none)")
    p.add_argument("--no-frustums", action="store_true", help="skip estimating the per-frame cameras")
    _common(p)
    p.set_defaults(run=_run_view)


def _run_view(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("viser") is None:
        raise TracefieldError("the viewer needs viser; install it with `pip install 'viser>=1.1.1'`")
    from viewer.app import ViewerOptions, serve

    if args.t_step <= 0 or args.t_step > 1:
        raise TracefieldError(f"--t-step {args.t_step}: use a step in (0, 1], e.g. 0.025")
    options = ViewerOptions(host=args.host, port=args.port, t_step=args.t_step, ds=args.ds, max_points=args.max_points,
                            trajectory_frames=args.trajectories, frustums=not args.no_frustums)
    serve(args.field, options)
    return 0


def _add_export(verbs: argparse._SubParsersAction) -> None:
    from tracefield.export import FORMATS, REGIONS, STRATEGIES

    p = verbs.add_parser(
        "export",
        help="trajectories -> track conditions for video generators (ATI, WorldCanvas, ComfyUI, Wan-Move)",
        description="Pick trajectories in a traced scene, re-time them to a generator's frames, project them "
        "through a camera (static, the filmed one, or your own path) and write the generator's track format, "
        "in original image pixels or its canvas.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _field_argument(p)
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="target generator format")
    p.add_argument("-o", "--output", type=Path, default=Path("exports"), help="output folder (default: exports/)")
    p.add_argument("--name", help="file name stem (default: the scene name)")
    sel = p.add_argument_group("which tracks")
    sel.add_argument("--select", default="objects", choices=STRATEGIES, help="objects (default): a few per moving object; grid; fps (farthest points); pixels")
    sel.add_argument("--pixels", help="your own start pixels, original image coordinates: 'x,y x,y ...'")
    sel.add_argument("--frame", type=int, default=0, help="frame the tracks are picked and start on; its image is written (default: 0)")
    sel.add_argument("--region", default="foreground", choices=REGIONS, help="for grid/fps (default: foreground)")
    sel.add_argument("--grid-step", type=int, default=32, help="network pixels between grid tracks (default: 32)")
    sel.add_argument("--max-tracks", type=int, default=200, help="at most this many tracks (default: 200)")
    sel.add_argument("--per-object", type=int, default=8, help="tracks per object with --select objects (default: 8)")
    sel.add_argument("--background", type=int, default=6, help="background tracks for camera control (default: 6; 0: none)")
    sel.add_argument("--min-object-area", type=int, default=100, help="smallest object, network pixels (default: 100)")
    cam = p.add_argument_group("camera and visibility")
    cam.add_argument("--camera", default="static", help="static (default), filmed, or a camera-path YAML")
    cam.add_argument("--focal", type=float, help="focal length in original pixels (default: estimated from the field)")
    cam.add_argument("--conf-percentile", type=float, default=10.0, help="hide points below this confidence percentile (default: 10)")
    cam.add_argument("--no-occlusion", action="store_true", help="do not hide points behind the scene")
    tim = p.add_argument_group("timing")
    tim.add_argument("--frames", type=int, help="output frames (default: the format's, e.g. ATI 121)")
    tim.add_argument("--fps", type=float, help="output frame rate (default: the format's, e.g. ATI 24)")
    tim.add_argument("--start", type=float, help="clip fraction where the motion starts (default: the time of --frame)")
    tim.add_argument("--end", type=float, default=1.0, help="clip fraction where it ends (default: 1)")
    tim.add_argument("--speed", type=float, help="play the motion in real time times this factor (default: stretch it over the output)")
    tim.add_argument("--source-fps", type=float, help="the clip's frame rate, for --speed with a frame folder")
    txt = p.add_argument_group("text and canvas")
    txt.add_argument("--prompt", help="text prompt for the generator")
    txt.add_argument("--caption", action="append", default=[],
                     help="WorldCanvas object caption, ID=TEXT (repeatable; at least one; objects without one stay out of the prompt)")
    txt.add_argument("--image", type=Path, help="edited first frame to write the conditions for (motion transfer), in its pixels")
    txt.add_argument("--canvas", help="generation canvas WxH (default: the format's, 832x480)")
    p.add_argument("--no-pictures", action="store_true", help="skip <name>_tracks.png/.mp4")
    _common(p)
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from tracefield.export import ExportOptions, run_export
    from tracefield.export.formats.worldcanvas import parse_captions
    from tracefield.export.selection import SelectionOptions, parse_pixels
    from tracefield.export.tracks import CameraOptions
    from tracefield.field import TraceField
    from tracefield.scene_folder import SceneFolder

    field = TraceField.load(args.field)
    options = ExportOptions(
        format=args.format,
        output=args.output,
        name=args.name or SceneFolder.of(args.field).name,
        selection=SelectionOptions(
            strategy=args.select, frame=args.frame, pixels=parse_pixels(args.pixels), region=args.region,
            grid_step=args.grid_step, max_tracks=args.max_tracks, per_object=args.per_object,
            background=args.background, min_object_area=args.min_object_area, conf_percentile=args.conf_percentile,
        ),
        camera=CameraOptions(mode=args.camera, focal=args.focal, occlusion=not args.no_occlusion, conf_percentile=args.conf_percentile),
        frames=args.frames, fps=args.fps, start=args.start, end=args.end, speed=args.speed, source_fps=args.source_fps,
        canvas=args.canvas, prompt=args.prompt, captions=parse_captions(args.caption), image=args.image, pictures=not args.no_pictures,
    )
    result = run_export(field, options)
    for path in result.files:
        log.info("wrote %s", path)
    return 0


GENERATE_EPILOG = """\
the whole path:
  tracefield export outputs/clip --format ati --prompt "a dog runs across the lawn" -o exports/
  tracefield generate exports/clip.yaml -o videos/
  tracefield generate exports/clip.yaml --seed -1 --steps 30        # a random seed (logged), fewer steps
weights (tracefield download --generator, tens of GB), as the hub lays them out:
  checkpoints/generator/wan2.1-i2v-14b-480p   Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (UMT5, CLIP, VAE; no transformer weights)
  checkpoints/generator/ati                   bytedance-research/ATI (the motion-trained transformer: shards + index, Wan's layout)
defaults are ATI's: 40 UniPC steps, shift 5.0, guidance 5.0, ATI's negative prompt, 81 frames at 480p,
noise drawn on the GPU; on CUDA the precisions are ATI's (UMT5 bf16, CLIP fp16, VAE fp32, transformer
bf16 autocast). Memory: about 40 GB of GPU at 480p; --offload fits ~32 GB, --offload blocks ~24 GB.
outputs per entry: <name>.mp4, <name>_tracks.png, <name>_tracks.mp4 (a list of entries loads the models once)
several GPUs of one machine (the same outputs, within bf16 rounding, as one GPU):
  tracefield generate exports/clip.yaml --gpus 8                     # each video's tokens split over 8 GPUs
  torchrun --nproc_per_node 8 -m tracefield generate exports/clip.yaml   # the same, started by torchrun
  tracefield generate exports/clip.yaml --gpus 8 --parallel sequence,guidance   # 2 x 4: a guidance branch per half
  tracefield generate many.yaml --gpus 8 --parallel data             # one video per GPU (default: >= 8 entries)
"""


def _add_generate(verbs: argparse._SubParsersAction) -> None:
    from tracefield.generate import MAX_AREAS, OFFLOAD_MODES, PARALLEL_MODES, SOLVERS

    p = verbs.add_parser(
        "generate",
        help="ATI run list (from export --format ati) -> videos with Wan2.1 I2V + ATI motion patch",
        description="Generate a video per entry of an ATI run list: the first frame, the prompt and the tracks "
        "drive Wan2.1-I2V-14B with ATI's motion-conditioned transformer, computing what ATI's own generate.py computes.",
        epilog=GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_list", type=Path, help="YAML list of {image, text, track} (ATI's --prompt run.yaml format)")
    p.add_argument("-o", "--output", type=Path, default=Path("videos"), help="output folder (default: videos/)")
    weights = p.add_argument_group("weights")
    weights.add_argument("--model-dir", type=Path, help="diffusers Wan2.1 I2V repo (default: checkpoints/generator/wan2.1-i2v-14b-480p)")
    weights.add_argument("--transformer", type=Path, help="ATI's transformer folder: shards + index + config.json (default: checkpoints/generator/ati)")
    weights.add_argument("--vae", type=Path, help="an original Wan2.1_VAE.pth to use instead of the repo's VAE")
    weights.add_argument("--random-weights", choices=["tiny"], help="untrained tiny random weights written in the published layouts: tests the whole path in seconds")
    sampling = p.add_argument_group("sampling (ATI's generate.py options)")
    sampling.add_argument("--solver", choices=SOLVERS, default="unipc", help="sampler (default: unipc, ATI's)")
    sampling.add_argument("--steps", type=int, default=40, help="sampling steps (default: 40)")
    sampling.add_argument("--shift", type=float, default=5.0, help="flow shift of the noise schedule (default: 5.0, ATI's at every size)")
    sampling.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (default: 5.0)")
    sampling.add_argument("--seed", type=int, default=0, help="noise seed; -1 draws a random one and logs it (default: 0)")
    sampling.add_argument("--negative-prompt", help="negative prompt (default: ATI's: Wan's with '镜头晃动，' (camera shake) in front)")
    sampling.add_argument("--frames", type=int, default=81, help="video frames, 4n+1 (default: 81, 5 s at 16 fps)")
    sampling.add_argument("--resolution", choices=sorted(MAX_AREAS), default="480p", help="pixel budget; the video keeps the image's aspect (default: 480p, what ATI was trained at)")
    sampling.add_argument("--max-area", type=int, help="pixel budget overriding --resolution (e.g. quick small previews)")
    sampling.add_argument("--noise-device", help="where the noise is drawn (default: the device that runs the model, as ATI); "
                          "cpu gives the same video on any machine")
    run = p.add_argument_group("hardware")
    run.add_argument("--device", default="auto", help="auto, cuda or cpu")
    run.add_argument("--dtype", default="auto", help="auto (ATI's precisions on CUDA, float32 on CPU), bfloat16 or float32")
    run.add_argument("--offload", nargs="?", const="model", choices=OFFLOAD_MODES,
                     help="keep components on the CPU until used (model); also stream the transformer's blocks (blocks)")
    run.add_argument("--no-batch-guidance", action="store_true", help="run the two guidance branches one after the other (less memory)")
    run.add_argument("--vae-tiling", action="store_true", help="decode the video in tiles (less memory)")
    run.add_argument("--attention", default="auto",
                     help="attention kernel: auto (default: FlashAttention-4 where flash-attn-4 is installed and the GPU is "
                     "Hopper or Blackwell, else PyTorch's choice), fa4, or a diffusers backend: native, _native_cudnn, flash")
    run.add_argument("--compile", action="store_true", help="torch.compile the transformer's blocks (a minute of compiling, faster steps)")
    gpus = p.add_argument_group("several GPUs of one machine (--gpus G, or torchrun --nproc_per_node G -m tracefield generate ...)")
    gpus.add_argument("--gpus", type=int, metavar="G", help="start G processes, one per GPU, as torchrun would (process 0 logs and writes)")
    gpus.add_argument("--parallel", choices=PARALLEL_MODES, metavar="MODE",
                      help="sequence: each video's tokens split over all GPUs (default with fewer entries than GPUs); "
                      "sequence,guidance: the prompt's and the negative prompt's branch each on half of the GPUs (G even); "
                      "data: one video per GPU, the entries shared out (default with at least one entry per GPU)")
    gpus.add_argument("--ring", type=int, default=1, metavar="R",
                      help="split the tokens over R GPUs with ring attention and the rest with Ulysses (default: 1, Ulysses alone)")
    gpus.add_argument("--shard-weights", action="store_true",
                      help="shard the transformer's weights over the GPUs (FSDP2, block by block): for GPUs that cannot hold 32 GB of weights")
    _common(p)
    p.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from tracefield.distributed import SHARES_APART, World, check_gpus, join, launch, leave
    from tracefield.generate import MAX_AREAS
    from tracefield.generate.attention import check_attention
    from tracefield.generate.parallel import DATA, check_options, choose_mode
    from tracefield.generate.pipeline import ATI_NEGATIVE_PROMPT, GenerationOptions
    from tracefield.generate.run import prepare, read_run_list
    from tracefield.model import resolve_device

    world = World.from_env()
    if world.size > 1 and not world.leader:
        _follower_logging(world, logging.CRITICAL + 1)  # the checks fail alike everywhere: process 0 says why
    if args.gpus is not None and (args.gpus < 1 or world.size > 1):
        raise TracefieldError(f"--gpus {args.gpus}: " + ("must be at least 1" if args.gpus < 1 else "starts its own processes; under torchrun leave it out"))
    processes = args.gpus or world.size
    if processes == 1 and (args.ring > 1 or args.shard_weights):
        raise TracefieldError(f"--{'ring' if args.ring > 1 else 'shard-weights'} splits a video over processes; start several with --gpus G (or torchrun)")
    if args.frames < 5 or args.frames % 4 != 1:
        raise TracefieldError(f"--frames {args.frames}: must be 4n + 1 and at least 5 (ATI: 81)")
    options = GenerationOptions(steps=args.steps, guidance_scale=args.guidance, shift=args.shift, solver=args.solver,
                                negative_prompt=args.negative_prompt or ATI_NEGATIVE_PROMPT, seed=args.seed, frames=args.frames,
                                max_area=args.max_area or MAX_AREAS[args.resolution], noise_device=args.noise_device,
                                batch_guidance=not args.no_batch_guidance)
    prepared = [prepare(item, args.frames) for item in read_run_list(args.run_list)]  # every entry is checked before any weights load
    device = resolve_device(args.device)
    mode = choose_mode(args.parallel, len(prepared), processes)
    check_attention(args.attention, device)
    if processes > 1:
        check_options(mode, processes, args.ring, args.offload, args.shard_weights, args.attention, device)
    if args.gpus is not None and args.gpus > 1:
        if args.device != "auto" and device.type != "cuda":
            raise TracefieldError(f"--gpus {args.gpus} with --device {args.device}: one GPU per process; leave out --device (or --gpus)")
        check_gpus(args.gpus, f"--gpus {args.gpus}")
        log.info("starting %d processes, one per GPU (--parallel %s)", args.gpus, mode)
        return launch(run, argparse.Namespace(**{**vars(args), "gpus": None}), args.gpus)
    device = join(world, device, timeout=SHARES_APART if mode == DATA else None)  # data: they meet after their videos
    code = _generate(args, options, prepared, mode, world, device)
    leave(world)  # not after an error: the others may wait in a collective, and torchrun (or launch) stops them
    return code


def _generate(args: argparse.Namespace, options, prepared: list, mode: str, world, device) -> int:
    """This process's part of the videos (all of them when alone), with the models loaded once."""
    import tempfile

    from tracefield.distributed import collect, share
    from tracefield.generate.parallel import DATA, plan_sequence, spread
    from tracefield.export.wan_sizes import aspect_bucket, latent_tokens
    from tracefield.generate.run import generate_all
    from tracefield.generate.warmup import StepShape, TransformerSetup
    from tracefield.generate.weights import ATI_DIR, WAN_DIR, load_pipeline
    from tracefield.paths import checkpoint_dir

    if not world.leader:
        _follower_logging(world, logging.WARNING if mode == DATA else logging.ERROR)
    mine = [prepared[i] for i in share(len(prepared), world)] if mode == DATA else prepared
    if mode == DATA and len(prepared) < world.size and world.leader:
        log.warning("--parallel data: %d entries for %d processes, %d of them idle", len(prepared), world.size, world.size - len(prepared))
    written = []
    if mine:
        with tempfile.TemporaryDirectory(prefix="tracefield-random-") as scratch:
            root = checkpoint_dir() / "generator"
            if args.random_weights:
                from tracefield.generate.layouts import write_layouts

                log.warning(UNTRAINED_BANNER.replace("(--random-weights)", f"(--random-weights {args.random_weights})"))
                root = Path(scratch)
                write_layouts(root, args.random_weights)
            # Sharded weights go to the GPU block shard by block shard: the whole transformer waits on the CPU.
            offload = "model" if args.shard_weights else args.offload
            wan_dir = args.model_dir or root / WAN_DIR
            alone = world.size == 1 or mode == DATA  # this process runs the whole transformer
            shape = StepShape.of(mine[0].image.shape[:2], options.frames, options.max_area, wan_dir / "image_encoder") if alone and not offload else None
            setup = TransformerSetup(device, args.attention, args.compile and alone, shape, options.batch_guidance)
            pipe = load_pipeline(wan_dir, args.transformer or root / ATI_DIR, args.vae, device, args.dtype, offload, on_transformer=setup)
        log.info("attention: %s", setup.attention)
        if not alone:
            tokens = {e.item.name: latent_tokens(*aspect_bucket(e.image.shape[1], e.image.shape[0], options.max_area), options.frames) for e in mine}
            spread(pipe, plan_sequence(mode, world.size, args.ring, pipe.transformer.config.num_attention_heads, tokens, device), world, args.shard_weights)
            if args.shard_weights:
                pipe.place(device)
            if args.compile:
                pipe.transformer.compile_repeated_blocks(fullgraph=True)
        if args.vae_tiling:
            pipe.vae.enable_tiling()
        written = generate_all(pipe, mine, args.output, options, progress=not args.quiet and world.leader)
    if mode == DATA:
        written = collect(written, world)
    for path in written:
        log.info("wrote %s", path)
    if args.random_weights and world.leader:
        log.warning("reminder: these videos come from UNTRAINED random weights")
    return 0


def _follower_logging(world, level: int) -> None:
    """Processes other than 0 log at ``level``, each line naming the process."""
    ours = logging.getLogger("tracefield")
    ours.setLevel(level)
    for handler in ours.handlers:
        handler.setFormatter(_ConsoleFormatter(f"rank {world.rank}: %(message)s"))


def _add_train(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "train",
        help="train (or fine-tune) the network on synthetic scenes",
        description="Train on procedural 4D scenes rendered on the fly (exact trajectories): the Trace Anything\n"
        "objective, AdamW, bf16 on CUDA. Resumes from <output>/last.pt; writes <output>/model.safetensors\n"
        "and log.csv. Under torchrun, processes train one model data-parallel.",
        epilog="example:\n  tracefield train --config configs/train_small.yaml --steps 2000 optim.lr=1e-4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=Path("configs/train_small.yaml"), help="training YAML (default: configs/train_small.yaml)")
    p.add_argument("--steps", type=int, help="stop after this many more steps (default: run to optim.steps)")
    p.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. optim.lr=1e-4 output=runs/x")
    _common(p)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from tracefield.train.loop import load_train_config, train

    config = load_train_config(args.config, args.overrides)
    train(config, device=args.device, max_steps=args.steps, max_minutes=args.minutes, progress=not args.quiet)
    return 0


def _add_eval(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "eval",
        help="trajectory accuracy on held-out synthetic scenes (vs zero motion, object translation and the untrained network)",
        description="Render held-out synthetic scenes (seeds training never uses) and report 3D EPE after scale "
        "alignment, 2D EPE and delta_avg in the first camera, 2D EPE on moving pixels, motion recall (the share of "
        "the moving points' true 2D motion the tracks carry: 1 all of it, 0 static, negative the wrong way) and visibility accuracy. "
        "Baselines: zero motion (each point keeps its true first-frame position), object translation (an oracle: "
        "each point moves with its object's true centre, without turning or deforming) and the untrained network.",
    )
    p.add_argument("--checkpoint", type=Path, help="weights to evaluate (default: checkpoints/tracefield-small.safetensors)")
    p.add_argument("--config", default=None, help="network config if the checkpoint carries none")
    p.add_argument("--scenes", type=int, default=50, help="held-out scenes (default: 50)")
    p.add_argument("--frames", type=int, default=16, help="frames per scene (default: 16)")
    p.add_argument("--size", default="256x448", help="HxW of the scenes (default: 256x448)")
    p.add_argument("--stage", default="full",
                   help="scenes of the toy family: one square translating (square), also turning and squashing (rotate), "
                   "under a moving camera (camera), or the full scenes (default: full)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda; scenes render there too (float32 on a GPU, float64 on the CPU, as the model card's table)")
    _common(p)
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from tracefield.data.synthetic import SceneConfig
    from tracefield.data.toy import STAGES
    from tracefield.model import load_model, resolve_device
    from tracefield.paths import checkpoint_dir, config_path
    from tracefield.train.evaluate import evaluate, format_table, object_translation, predict_scene, zero_motion

    if args.stage not in STAGES:
        raise TracefieldError(f"--stage {args.stage}: unknown; use one of {', '.join(STAGES)}")
    checkpoint = args.checkpoint or checkpoint_dir() / "tracefield-small.safetensors"
    config = config_path(args.config) if args.config else None
    device = resolve_device(args.device)  # scenes render there too: CPU rendering is ~10 s a scene
    model = load_model(config, checkpoint, device=device)
    untrained = load_model(config or model.net_config.to_dict(), None, device=device)  # the same network, random weights
    height, width = (int(v) for v in args.size.lower().split("x"))
    results = evaluate(
        {"model": lambda s: predict_scene(model, s), "zero motion": zero_motion, "object translation": object_translation,
         "untrained network": lambda s: predict_scene(untrained, s)},
        args.scenes, SceneConfig(frames=args.frames, height=height, width=width, stage=args.stage), device=str(device), progress=not args.quiet,
    )
    print(format_table(results))
    return 0


def _add_download(verbs: argparse._SubParsersAction) -> None:
    from tracefield.paths import HF_FILENAME, HF_REPO

    p = verbs.add_parser(
        "download",
        help="fetch the public checkpoint and convert it to safetensors",
        description=f"Download {HF_FILENAME} from the Hugging Face repo {HF_REPO} (about 2.7 GB, CC BY-NC 4.0), "
        "check every weight against the full-size network, and store it as trace_anything.safetensors.",
        epilog="Offline? Put the file at <dest>/trace_anything.pt by hand (or pass --source) and run this again.",
    )
    p.add_argument("--dest", type=Path, default=None, help="checkpoint folder (default: checkpoints/ or $TRACEFIELD_HOME/checkpoints)")
    p.add_argument("--generator", action="store_true", help="fetch the ATI video generator instead (Wan2.1 I2V 14B + ATI, tens of GB)")
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
    for name in ("tracefield", "viewer"):
        ours = logging.getLogger(name)
        ours.handlers[:] = [handler]
        ours.setLevel(level)
        ours.propagate = False  # libraries (huggingface_hub, ...) keep their own handlers


def _run_infer(args: argparse.Namespace) -> int:
    import torch

    from tracefield import shards
    from tracefield.distributed import SHARES_APART, World, join, leave
    from tracefield.infer import Footprint, InferOptions
    from tracefield.io.frames import check_selection, discover_scenes
    from tracefield.model import resolve_device, resolve_dtype
    from tracefield.stages import Stages, process_age

    world = World.from_env()
    stages = Stages()
    stages.add("imports", process_age())  # interpreter start-up and imports, up to here
    if not world.leader:  # one voice for the run: the others warn only
        _follower_logging(world, logging.WARNING)
    _check_infer_arguments(args)
    check_selection(args.max_frames, args.stride)
    config, model_config = _infer_config(args)
    options = InferOptions(
        max_frames=args.max_frames,
        stride=args.stride,
        long_side=args.resolution or model_config.runtime.long_side,
        start=args.start,
        end=args.end,
        release_output=args.output_pt,
        local_head=args.local_head,
        field_dtype=torch.float32 if args.field_float32 else torch.float16,
        overwrite=args.overwrite,
        progress=not args.quiet and world.leader,
    )
    scenes = discover_scenes(args.inputs, name=args.name)  # names and paths only: a wrong path fails at once
    checkpoint = None if args.random_weights else (args.checkpoint or _config_checkpoint(model_config, config))
    # Several processes meet after their shares of scenes; they do not leave after an error (torchrun stops the others).
    device = join(world, resolve_device(args.device), timeout=SHARES_APART)
    if args.profile is not None and device.type == "cuda":
        stages.sync = lambda: torch.cuda.synchronize(device)  # the GPU join gave this process
    dtype = resolve_dtype(args.dtype if args.dtype is not None else model_config.runtime.dtype, device)
    footprint = Footprint.planned(model_config, device, dtype, args.attention)

    def load():
        from tracefield.model import load_model

        model = load_model(config, checkpoint, device=device, dtype=dtype, attention=args.attention, compile=args.compile or None)
        if model.untrained and world.leader:
            log.warning(UNTRAINED_BANNER)
        log.info("model %s on %s (%s, attention %s)", model.config_source, device, str(dtype).replace("torch.", ""), model.attention_backend)
        return model

    summary = shards.trace_all(scenes, args.output, options, footprint, load, world, stages)
    leave(world)
    return _report_infer(args, summary, stages, world)


def _report_infer(args: argparse.Namespace, summary: "RunSummary", stages: "Stages", world: "World") -> int:
    """The end of a run: seconds per stage, the summary (several scenes), what the fields' network
    can do (the demo's traces motion weakly: said wherever a run ends), the exit status."""
    log.log(logging.INFO if args.profile is not None else logging.DEBUG, "seconds per stage (process %d of %d):\n%s",
            world.rank, world.size, stages.table())
    if args.profile:  # under torchrun, one file per process: out.json, out.rank1.json, ...
        path = Path(args.profile)
        (path.with_suffix(f".rank{world.rank}{path.suffix}") if world.rank else path).write_text(stages.to_json())
    if not world.leader:
        return EXIT_USER_ERROR if summary.failures else 0
    if len(summary.results) > 1:
        log.info("%s", summary.table())
    skipped = sum(r.status == "skipped" for r in summary.results)
    log.info("done: %d scene(s) traced, %d already traced, in %s", len(summary.written), skipped, args.output)
    traced = {r.caveat for r in summary.results if r.status == "traced"}
    for caveat in sorted((traced | _caveats(r.folder for r in summary.results if r.status == "skipped")) - {None}):
        log.warning("these fields were %s", caveat)
    if summary.failures:
        log.error("%d of %d scenes failed (reasons above); run the same command again to retry only them",
                  len(summary.failures), len(summary.results))
        return EXIT_USER_ERROR
    return 0


def _caveats(folders: Iterable[Path]) -> set[str]:
    """What the networks of the fields in ``folders`` (finished by an earlier run) can do, from their
    headers; a folder moved, removed or damaged since tells nothing (this run itself went well)."""
    from tracefield.field import TraceField

    caveats = set()
    for folder in folders:
        try:
            caveats.add(TraceField.caveat_of(folder))
        except Exception as exc:  # an advisory note: never the reason a finished run fails
            log.debug("%s: no caveat read (%s)", folder, exc)
    return caveats - {None}


def _check_infer_arguments(args: argparse.Namespace) -> None:
    """One line for option values no scene could use."""
    if args.resolution is not None and args.resolution < 64:
        raise TracefieldError(f"--resolution {args.resolution}: the long side needs at least 64 pixels, e.g. --resolution 512")
    if args.start is not None and args.start < 0:
        raise TracefieldError(f"--start {args.start:g}: seconds from the start of the video, 0 or more")
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise TracefieldError(f"--end {args.end:g} is not after --start {args.start:g}; pass a later --end")
    if args.end is not None and args.end <= 0:
        raise TracefieldError(f"--end {args.end:g}: seconds from the start of the video, more than 0")


def _infer_config(args: argparse.Namespace) -> tuple[Optional[Path], ModelConfig]:
    """The network to build: --config, else the config stored in --checkpoint, else the full-size eval config.

    Returns the config file (None: the checkpoint's own) and the config itself, which is
    needed before the weights load (its runtime section sets the frames' size).
    """
    from tracefield.model import load_config
    from tracefield.model.checkpoint import stored_config
    from tracefield.paths import DEFAULT_CONFIG, config_path

    if args.config is None and args.checkpoint is not None:
        stored = stored_config(args.checkpoint)
        if stored is not None:
            return None, load_config(stored)
    path = config_path(args.config or DEFAULT_CONFIG)
    return path, load_config(path)


def _config_checkpoint(cfg: ModelConfig, config: Path) -> Path:
    """The checkpoint the config ``cfg`` (read from ``config``) names, which must exist."""
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

    if args.generator:
        from tracefield.generate.weights import download_generator
        from tracefield.paths import checkpoint_dir

        for folder in download_generator((args.dest or checkpoint_dir()) / "generator"):
            log.info("ready: %s", folder)
        return 0

    out = download_checkpoint(dest_dir=args.dest, repo=args.repo, filename=args.filename, source=args.source)
    log.info("ready: %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
