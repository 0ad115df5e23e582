"""Screenshot the Snakemake HTML report in headless Chromium and check that the audit's claims table shows.

    python tools/screenshot_report.py --build            # snakemake --report results/report.html, then the shot
    python tools/screenshot_report.py results/report.html results/report.png
    python tools/screenshot_report.py --install ...      # apt-get install chromium first if it is missing (root)

The report is a single self-contained HTML page rendered by JavaScript; its front page shows the workflow
description, which includes the audit's claims overview (workflow/report/workflow.rst). The script takes a
screenshot, dumps the rendered DOM, and reports whether the claims table (id ``audit-claims``) is in the DOM
and how many pixels carry each verdict's colour, i.e. whether the table is visibly drawn. Exit status 0 when
the table is there and visible. Chromium: $CHROMIUM, or chromium / chromium-browser / google-chrome on PATH
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: background colours of the verdict cells (bayes_transfer.audit.render.STYLE), RGB 0-255; "not supported" is
#: the reproducibility report's verdict column
VERDICT_COLOURS = {"supported": (0xD4, 0xF4, 0xD4), "contradicted": (0xF4, 0xB8, 0xB8),
                   "no relevant effect": (0xD8, 0xE4, 0xF4), "inconclusive": (0xF4, 0xEC, 0xC8),
                   "not supported": (0xF8, 0xD0, 0xD0)}


def find_chromium(install: bool = False, timeout: int = 900) -> str | None:
    """Path of a Chromium/Chrome executable, or None. With ``install``, try ``apt-get install -y chromium``
    when none is found and we are root on a Debian-like system."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    for name in CANDIDATES:
        if shutil.which(name):
            return shutil.which(name)
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                    ["apt-get", "install", "-y", "chromium"]):
            try:
                subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, check=False)
            except (OSError, subprocess.TimeoutExpired):
                return None
            if shutil.which("chromium"):
                return shutil.which("chromium")
    return None


def _run(exe: str, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [exe, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", *args]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(2, "--no-sandbox")  # Chromium refuses to start as root with its sandbox
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(html: str | Path, png: str | Path, *, exe: str, width: int = 1600, height: int = 1100,
               budget_ms: int = 10000, timeout: int = 180) -> Path:
    """Render ``html`` (JavaScript given ``budget_ms`` of virtual time) and save a ``width`` x ``height`` PNG."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    out = _run(exe, [f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
                     f"--screenshot={png}", Path(html).resolve().as_uri()], timeout)
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {out.returncode}): {out.stderr[-2000:]}")
    return png


def dump_dom(html: str | Path, *, exe: str, budget_ms: int = 10000, timeout: int = 180) -> str:
    """The DOM after the report's JavaScript has rendered it."""
    out = _run(exe, [f"--virtual-time-budget={budget_ms}", "--dump-dom", Path(html).resolve().as_uri()], timeout)
    if out.returncode != 0 or not out.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def claims_rows(dom: str) -> list[list[str]]:
    """The rendered claims overview table (id audit-claims) as rows of cell texts; [] when absent."""
    m = re.search(r'<table[^>]*id="audit-claims"[^>]*>(.*?)</table>', dom, flags=re.DOTALL)
    if not m:
        return []
    rows = re.findall(r"<tr>(.*?)</tr>", m.group(1), flags=re.DOTALL)
    cell = re.compile(r"<t[dh][^>]*>(.*?)</t[dh]>", flags=re.DOTALL)
    unescape = lambda s: re.sub(r"<[^>]+>", "", s).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return [[unescape(c).strip() for c in cell.findall(r)] for r in rows]


def pixel_stats(png: str | Path) -> dict:
    """Share of non-white pixels and the number of pixels of each verdict colour."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(str(png))
    rgb = np.round(img[..., :3] * 255).astype(int) if img.dtype != np.uint8 else img[..., :3].astype(int)
    stats = {"size": (rgb.shape[1], rgb.shape[0]),
             "non_white": float((rgb.sum(axis=2) < 3 * 250).mean()),
             "std": float(rgb.std())}
    for name, colour in VERDICT_COLOURS.items():
        stats[name] = int((np.abs(rgb - np.array(colour)).max(axis=2) <= 2).sum())
    return stats


def build_report(report: Path, cwd: Path = ROOT) -> None:
    report.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--report", str(report)]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", nargs="?", default="results/report.html", help="the Snakemake HTML report")
    ap.add_argument("png", nargs="?", default="results/report_screenshot.png", help="where to save the screenshot")
    ap.add_argument("--build", action="store_true", help="run `snakemake --report REPORT` first")
    ap.add_argument("--install", action="store_true", help="apt-get install chromium if it is missing (root)")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1100)
    args = ap.parse_args(argv)
    report = Path(args.report)
    if args.build:
        build_report(report.resolve())
    if not report.exists():
        print(f"{report}: no such report; build it with `snakemake --report {report}` or pass --build")
        return 2
    exe = find_chromium(install=args.install)
    if exe is None:
        print("no Chromium found: install it (Debian: apt-get install chromium), set $CHROMIUM, or pass --install")
        return 2
    png = screenshot(report, args.png, exe=exe, width=args.width, height=args.height)
    rows = claims_rows(dump_dom(report, exe=exe))
    stats = pixel_stats(png)
    print(f"screenshot: {png} ({stats['size'][0]} x {stats['size'][1]}, {stats['non_white']:.0%} non-white)")
    if not rows:
        print("the claims table (id audit-claims) is NOT in the rendered report")
        return 1
    print(f"claims table in the rendered report: {len(rows) - 1} claims")
    for row in rows[1:]:
        print("  " + " | ".join(row[:3]))
    coloured = {k: v for k, v in stats.items() if k in VERDICT_COLOURS}
    print(f"verdict-coloured pixels in the screenshot: {coloured}")
    return 0 if sum(coloured.values()) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
