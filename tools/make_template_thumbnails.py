"""Make the Templates menu's thumbnails (workflows/<name>.jpg, which ComfyUI serves beside each
workflow and the frontend shows on its card) from the browser test's captures of the opened graphs,
captioned with the workflow's one-line description (``extra.description``): the frontends show only
the file name on a custom node's template card, so the picture carries what it does and needs.

    COMFYUI_PATH=/work/comfyui bash tests/browser/run_browser_tests.sh -k loads_runs   # captures
    python tools/make_template_thumbnails.py    # tests/browser/out/thumbnails/*.png → workflows/*.jpg
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (512, 384)  # the cards are 4:3; the graph is fitted above the caption on the canvas colour
CAPTION = 66  # px for two lines of description
FONT_SIZE = 17


def description(workflow: str) -> str:
    with open(workflow, encoding="utf-8") as handle:
        text = (json.load(handle).get("extra") or {}).get("description", "")
    if not text:
        raise SystemExit(f"error: {workflow} has no extra.description (one line: what it does, what it needs)")
    return text


def wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels."""
    lines = [""]
    for word in text.split():
        trial = f"{lines[-1]} {word}".strip()
        if font.getlength(trial) <= width or not lines[-1]:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def thumbnail(source: str, target: str, caption: str) -> None:
    image = Image.open(source).convert("RGB")
    image.thumbnail((SIZE[0], SIZE[1] - CAPTION), Image.Resampling.LANCZOS)
    card = Image.new("RGB", SIZE, image.getpixel((0, 0)))
    card.paste(image, ((SIZE[0] - image.width) // 2, (SIZE[1] - CAPTION - image.height) // 2))
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, SIZE[1] - CAPTION, SIZE[0], SIZE[1]), fill=(24, 24, 28))
    font = ImageFont.load_default(FONT_SIZE)
    lines = wrap(caption, font, SIZE[0] - 20)
    for i, line in enumerate(lines):
        draw.text((10, SIZE[1] - CAPTION + 8 + i * (FONT_SIZE + 6)), line, fill=(235, 235, 235), font=font)
    card.save(target, "JPEG", quality=88, optimize=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captures", default=os.path.join(ROOT, "tests", "browser", "out", "thumbnails"))
    p.add_argument("--workflows", default=os.path.join(ROOT, "workflows"))
    args = p.parse_args(argv)
    names = sorted(os.path.splitext(f)[0] for f in os.listdir(args.workflows) if f.endswith(".json"))
    missing = [n for n in names if not os.path.isfile(os.path.join(args.captures, n + ".png"))]
    for name in names:
        if name not in missing:
            thumbnail(os.path.join(args.captures, name + ".png"), os.path.join(args.workflows, name + ".jpg"),
                      description(os.path.join(args.workflows, name + ".json")))
            print(f"wrote {os.path.join(args.workflows, name + '.jpg')}")
    if missing:
        print(f"error: no capture for {', '.join(missing)} in {args.captures} (run the browser test first)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
