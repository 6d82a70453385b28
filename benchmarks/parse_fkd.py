"""Benchmark the FKD reader on the fkd-proxy's training.csv (2449 rows, 80 MB).

    python benchmarks/parse_fkd.py [TRAINING_ZIP] [--repeats 5]

Times (best and median of --repeats) the plug-in's read_training, projects the real file's
7049 rows, then parses a full-size 7049-row file built by repeating proxy rows, times the cached
load (KeypointData.load of the saved .npz), compares pixel decoders on the Image fields alone
(the plug-in's numpy decoder at several block sizes, np.fromstring per row, pandas' C parser)
and runs once the seed notebooks' way (pandas read_csv + per-row str.split). Prints Markdown
for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`

from kit.competition import load_competition  # noqa: E402
from kit.data.arrays import KeypointData  # noqa: E402

REAL_ROWS = 7049  # rows of the real FKD training.csv (~240 MB)
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "fkd-proxy" / "training.zip"


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(best, median) seconds of `repeats` calls, and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return min(seconds), statistics.median(seconds), result


def row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def throughput(label: str, best: float, median: float, rows: int, size: int) -> None:
    row(
        label,
        rows,
        f"{size / 1e6:.0f}",
        f"{best:.3f}",
        f"{median:.3f}",
        f"{rows / best:,.0f}",
        f"{size / 1e6 / best:,.0f}",
        f"{REAL_ROWS * best / rows:.2f}",
    )


def naive_seed_parse(path: Path) -> np.ndarray:
    """The seed notebooks' way: pandas, then a Python string per pixel."""
    frame = pd.read_csv(path)
    images = frame["Image"].map(lambda s: np.array(s.split(), dtype=np.uint8))
    return np.stack(images.to_list()).reshape(-1, 96, 96)


def image_fields(path: Path) -> list[bytes]:
    return [line.rpartition(b",")[2] for line in path.read_bytes().splitlines()[1:] if line]


def fromstring_per_row(fields: list[bytes]) -> np.ndarray:
    return np.stack([np.fromstring(f, dtype=np.int16, sep=" ") for f in fields]).astype(np.uint8)


def pandas_space_separated(fields: list[bytes]) -> np.ndarray:
    text = io.BytesIO(b"\n".join(fields))
    return pd.read_csv(text, sep=" ", header=None, dtype=np.uint8, engine="c").to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zip", nargs="?", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    comp = load_competition("facial-keypoints")
    plugin = comp.plugin

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with zipfile.ZipFile(args.zip) as zf:
            path = Path(zf.extract("training.csv", folder))
        size = path.stat().st_size
        full = folder / "training-7049.csv"
        lines = path.read_bytes().splitlines()
        rows = [lines[1 + i % (len(lines) - 1)] for i in range(REAL_ROWS)]
        full.write_bytes(b"\n".join([lines[0], *rows]) + b"\n")
        del lines, rows

        print("| parse | rows | MB | best s | median s | rows/s | MB/s | projected s, 7049 rows |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        best, median, train = timed(lambda: plugin.read_training(path, comp), args.repeats)
        throughput("kit read_training, proxy", best, median, len(train), size)
        kit_best = best
        repeats = max(3, args.repeats // 2)
        best, median, big = timed(lambda: plugin.read_training(full, comp), repeats)
        throughput("kit read_training, 7049 rows", best, median, len(big), full.stat().st_size)
        best, _, naive = timed(lambda: naive_seed_parse(path), 1)
        throughput("naive: read_csv + str.split", best, best, len(naive), size)
        assert np.array_equal(naive, train.images), "the two parsers disagree"
        print(f"\nspeed-up over the naive parse: {best / kit_best:.1f}x\n")

        print("| cached load (KeypointData.load) | rows | MB on disk | best s | median s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, data in (("proxy", train), ("7049 rows", big)):
            npz = folder / f"{label.replace(' ', '-')}.npz"
            data.save(npz)
            best, median, _ = timed(lambda npz=npz: KeypointData.load(npz), args.repeats)
            row(label, len(data), f"{npz.stat().st_size / 1e6:.0f}", f"{best:.3f}", f"{median:.3f}")
        del big

        fields = image_fields(path)
        want = train.images.reshape(len(train), -1)
        print("\n| pixel decoder, Image fields only (proxy) | best s | median s | MB/s |")
        print("| --- | ---: | ---: | ---: |")
        name = "training.csv"
        default_block = plugin.reader.BLOCK_ROWS
        for block in (8, 16, 64, 256, len(fields)):
            plugin.reader.BLOCK_ROWS = block
            best, median, got = timed(
                lambda: plugin.decode_images(Path(name), fields, 96, str), args.repeats
            )
            assert np.array_equal(got.reshape(len(fields), -1), want)
            label = f"kit numpy digits, {block} rows per block"
            row(label, f"{best:.3f}", f"{median:.3f}", f"{size / 1e6 / best:,.0f}")
        plugin.reader.BLOCK_ROWS = default_block
        for label, decoder in (
            ("np.fromstring(sep=' ') per row", fromstring_per_row),
            ("pandas read_csv(sep=' ')", pandas_space_separated),
        ):
            best, median, got = timed(lambda decoder=decoder: decoder(fields), 3)
            assert np.array_equal(got, want)
            row(label, f"{best:.3f}", f"{median:.3f}", f"{size / 1e6 / best:,.0f}")


if __name__ == "__main__":
    main()
