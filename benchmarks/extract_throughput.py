"""Throughput of ``mmib extract``: clips per minute for 10-second clips, per extractor, with 1 and 2 jobs.

Run: ``python benchmarks/extract_throughput.py [--clips 12] [--seconds 10] [--jobs 1 2]``.

The clips are generated first (MP4, 480x360 at 25 fps with an AAC speech track
inside and a drawn, moving face; a transcript each), then each extractor runs
alone (``--modalities``) and all together, without cache. Two figures per row:

* ``clips/min``: end to end, including starting the workers and loading the
  models (what a user waits for on ``--clips`` clips);
* ``steady clips/min``: after the first clip of each worker is done, i.e. with
  the models loaded (what a long run approaches);
* ``CPU s``: CPU time of the whole extraction (all processes and threads,
  model loading included), which depends much less on other load than wall time.

The machine's load average is printed: on a shared machine the wall-clock
figures move with it.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from mmib.features import synthetic as S
from mmib.features.clips import Clip
from mmib.features.extract import extract_clips
from mmib.features.settings import ExtractorSettings

CONFIGS: dict[str, dict] = {
    "text (MiniLM)": {"modalities": ("text",)},
    "audio (eGeMAPS)": {"modalities": ("audio",)},
    "vision (OpenCV Haar)": {"modalities": ("vision",), "vision_backend": "opencv"},
    "vision (MediaPipe mesh)": {"modalities": ("vision",), "vision_backend": "mediapipe"},
    "all (MediaPipe)": {"vision_backend": "mediapipe"},
    "all (OpenCV)": {"vision_backend": "opencv"},
}


def make_clips(root: Path, n: int, seconds: float, fps: float, size: tuple[int, int]) -> list[Clip]:
    clips = []
    texts = S.POSITIVE + S.NEGATIVE
    for i in range(n):
        path = root / f"clip{i:03d}.mp4"
        text = texts[i % len(texts)]
        S.write_av_clip(path, S.face_frames(seconds, fps, size, seed=i), S.speech(text + ". " + text, seconds, seed=i), fps)
        clips.append(Clip(path.stem, transcript=text, label=1.0, video=path))
    return clips


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes), all threads."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(clips: list[Clip], settings: ExtractorSettings, jobs: int) -> tuple[float, float, float, int]:
    """Wall seconds, steady-state clips/min, CPU seconds and failures of one extraction."""
    stamps: list[float] = []
    cpu0 = _cpu_seconds()
    start = time.perf_counter()
    results = extract_clips(clips, settings, jobs=jobs, cache_dir=None, progress=False,
                            on_result=lambda r: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu0
    k = min(jobs, len(stamps)) - 1  # skip each worker's first clip (model loading)
    steady = (len(stamps) - 1 - k) / (stamps[-1] - stamps[k]) * 60 if len(stamps) - 1 > k else float("nan")
    return wall, steady, cpu, sum(not r.ok for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate of the generated videos")
    ap.add_argument("--size", default="480x360", help="WxH of the generated videos")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", nargs="*", help="substrings of extractor rows to run")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    import importlib.util

    have_mp = importlib.util.find_spec("mediapipe") is not None
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        clips = make_clips(Path(tmp), args.clips, args.seconds, args.fps, (w, h))
        print(f"{args.clips} clips of {args.seconds:g} s ({w}x{h}, {args.fps:g} fps, AAC speech "
              f"{'(espeak-ng)' if S.espeak_available() else '(tone)'}) generated in {time.perf_counter() - t:.1f} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        d = ExtractorSettings()
        print(f"settings: text_max_len {d.text_max_len}, audio {d.audio_fps:g} steps/s, vision {d.vision_fps:g} frames/s "
              f"(<= {d.vision_max_side} px)")
        print("| extractor | jobs | wall s | clips/min | steady clips/min | CPU s | failed | load avg |")
        print("|---|---|---|---|---|---|---|---|")
        for name, kw in CONFIGS.items():
            if args.only and not any(o.lower() in name.lower() for o in args.only):
                continue
            if kw.get("vision_backend") == "mediapipe" and not have_mp:
                print(f"| {name} | - | skipped: mediapipe not installed | | | | | |")
                continue
            settings = ExtractorSettings(**kw)
            for jobs in args.jobs:
                wall, steady, cpu, failed = run_one(clips, settings, jobs)
                print(f"| {name} | {jobs} | {wall:.1f} | {args.clips / wall * 60:.1f} | {steady:.1f} | {cpu:.1f} | "
                      f"{failed} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
