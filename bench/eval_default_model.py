"""Re-measure the bundled model's quality as its model card reports it.

    python tools/prepare_default_data.py --skimage scikit_image-0.26.0-*.whl --out /tmp/default_data
    python bench/eval_default_model.py /tmp/default_data/eval /tmp/default_eval

Runs tools/evaluate.py on the held-out images (never used in training) blurred with the training
distribution and kernel seed 0, against the classical baselines; prints the summary table.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ARGS = ["--model", "default", "--baseline", "blind-wiener", "--baseline", "oracle-wiener",
        "--seed", "0", "--kernel-size", "21", "--intensity", "0.2", "1.0", "--noise", "0", "0.01", "--gamma", "2.2",
        "--sheet-height", "160", "--sheet-names", "coffee.png", "rocket.png", "camera.png",
        "dead_leaves_0120.png", "dead_leaves_0123.png"]

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(subprocess.call([sys.executable, os.path.join(HERE, "..", "tools", "evaluate.py"),
                              "--sharp", sys.argv[1], "--out", sys.argv[2], *ARGS]))
