"""``mmib extract``: features of raw clips (video, audio, transcript) in the MMSA layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmib.errors import ConfigError

COMMAND = "extract"
HELP = "extract text/audio/vision features from raw clips into an MMSA-layout pickle"
ORDER = 15
DESCRIPTION = (
    "Read CLIPS_DIR (video and/or audio per clip, transcripts in --labels or X.txt) and write an MMSA-layout "
    "pickle that `mmib train -d mmsa --data-path OUT` reads. Text: MiniLM sentence-transformer (token sequence + "
    "sentence vector); audio: openSMILE eGeMAPS LLDs + functionals; vision: MediaPipe face mesh geometry or "
    "OpenCV Haar cascades. Everything runs offline; needs the 'features' extra (and 'mediapipe' for that backend)."
)


def add_settings_args(p: argparse.ArgumentParser) -> None:
    """Extractor options (defaults: :class:`~mmib.features.settings.ExtractorSettings`)."""
    from mmib.features.settings import DEFAULT_TEXT_MODEL, MODALITIES, ExtractorSettings

    d = ExtractorSettings()
    g = p.add_argument_group("extractors")
    g.add_argument("--modalities", default=",".join(MODALITIES), help="extractors to run (default: %(default)s); "
                   "the others are written as zeros with length 0")
    g.add_argument("--text-model", default=DEFAULT_TEXT_MODEL,
                   help="the packaged MiniLM (default: %(default)s) or a local sentence-transformers/HF model directory")
    g.add_argument("--text-max-len", type=int, default=d.text_max_len, help="tokens per transcript (default: %(default)s)")
    g.add_argument("--audio-fps", type=float, default=d.audio_fps, help="audio steps per second (default: %(default)s)")
    g.add_argument("--audio-max-len", type=int, default=d.audio_max_len, help="most audio steps (default: %(default)s)")
    g.add_argument("--vision", dest="vision_backend", default=d.vision_backend, choices=("auto", "mediapipe", "opencv"),
                   help="face features backend; auto: mediapipe if installed, else opencv (default: %(default)s)")
    g.add_argument("--vision-fps", type=float, default=d.vision_fps, help="frames sampled per second (default: %(default)s)")
    g.add_argument("--vision-max-len", type=int, default=d.vision_max_len, help="most frames (default: %(default)s)")


def settings_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from mmib.features.settings import ExtractorSettings, parse_modalities

    return ExtractorSettings(
        modalities=parse_modalities(args.modalities), text_model=args.text_model, text_max_len=args.text_max_len,
        audio_fps=args.audio_fps, audio_max_len=args.audio_max_len, vision_backend=args.vision_backend,
        vision_fps=args.vision_fps, vision_max_len=args.vision_max_len,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("clips_dir", help="folder with the clips' media files (X.mp4, X.wav, ..., X.txt)")
    p.add_argument("--labels", help="CSV with columns id, text, label (optional), split (optional); "
                   "without it every clip in CLIPS_DIR is taken, unlabelled")
    p.add_argument("-o", "--output", required=True, help="pickle to write (e.g. features.pkl)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="parallel worker processes (default: %(default)s)")
    p.add_argument("--split", default="0.7,0.15,0.15",
                   help="TRAIN,VALID,TEST fractions for a seeded random split when the CSV has no split column "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default: %(default)s)")
    p.add_argument("--require", default="", help="modalities a clip must have, e.g. text,audio (else it fails); "
                   "by default a missing one is masked")
    p.add_argument("--cache-dir", help="per-clip cache (default: OUTPUT.cache); reruns skip finished clips")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the per-clip cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_settings_args(p)


def run(args: argparse.Namespace) -> int:
    import sys

    from mmib.features.clips import assign_splits, discover_clips, parse_fractions, read_labels
    from mmib.features.extract import summary_lines
    from mmib.features.mmsa import extract_to_mmsa
    from mmib.features.settings import parse_modalities

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    settings = settings_from_args(args).resolved()
    require = parse_modalities(args.require) if args.require.strip() else ()
    if set(require) - set(settings.modalities):
        raise ConfigError(f"--require {args.require}: not among --modalities {args.modalities}")
    fractions = parse_fractions(args.split)
    if args.labels:
        clips, columns = read_labels(args.labels, args.clips_dir)
    else:
        if Path(args.clips_dir).is_file():
            raise ConfigError(f"{args.clips_dir}: CLIPS_DIR must be a folder")
        clips, columns = discover_clips(args.clips_dir), {"label": False, "split": False, "text": False}
    splits = assign_splits(clips, fractions, args.seed)
    rule = ({"rule": "column"} if columns["split"] else
            {"rule": "seeded", "fractions": list(fractions), "seed": args.seed})
    out = Path(args.output)
    cache = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else out.with_name(out.name + ".cache")
    print(f"extracting {len(clips)} clips with {', '.join(settings.modalities)} "
          f"(vision: {settings.vision_backend}), {args.jobs} job(s)", file=sys.stderr)
    obj, results = extract_to_mmsa(clips, out, settings, splits, rule, jobs=args.jobs, cache_dir=cache,
                                   require=require, progress=not args.quiet)
    sizes = "/".join(str(len(obj[s]["id"])) for s in ("train", "valid", "test"))
    dims = obj["meta"]["dims"]
    n_ok = sum(r.ok for r in results)
    cached = sum(r.cached for r in results)
    tb = obj["train"]
    print(f"wrote {out}: {n_ok} clips ({sizes} train/valid/test"
          f"{', seeded split' if rule['rule'] == 'seeded' else ''}), "
          f"text[{tb['text'].shape[1]}x{dims['text']}] audio[{tb['audio'].shape[1]}x{dims['audio']}] "
          f"vision[{tb['vision'].shape[1]}x{dims['vision']}]" + (f"; {cached} from cache" if cached else ""))
    if not columns["label"]:
        print("note: no labels (no --labels CSV or no label column): regression_labels are NaN, so the file "
              "cannot be trained on")
    for line in summary_lines(results):
        print(line)
    return 0
