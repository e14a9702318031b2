#!/usr/bin/env python3
"""text_ids.py — text <-> token ids for the lab's --prompt-ids / --prompt-file, through the
`tokenizers` package and a model folder's tokenizer.json (the engine itself reads ids only).

  python3 labs/moe/text_ids.py MODEL_DIR "The quick brown fox"   -> 504,4062,... (for --prompt-ids)
  python3 labs/moe/text_ids.py MODEL_DIR --decode 504,4062,...   -> text (e.g. a "# generated[0]:" line)

Exits 77 (skipped) when `tokenizers` is not installed, 2 on bad arguments."""
import os
import sys


def main(argv):
    if len(argv) < 3 or (argv[2] == "--decode" and len(argv) != 4):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("text_ids.py: the tokenizers package is not installed (pip install tokenizers)", file=sys.stderr)
        return 77
    path = os.path.join(argv[1], "tokenizer.json")
    if not os.path.exists(path):
        print("text_ids.py: no %s" % path, file=sys.stderr)
        return 2
    tok = Tokenizer.from_file(path)
    if argv[2] == "--decode":
        ids = [int(t) for t in argv[3].replace(",", " ").split()]
        print(tok.decode(ids))
    else:
        print(",".join(str(i) for i in tok.encode(" ".join(argv[2:])).ids))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
