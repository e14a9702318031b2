"""book_refs.md must point at code that exists: every `file:function` it names is a file
of the repository that defines or launches that function, and every chapter and lab layer
in the checkout has a row."""
import os
import re
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BookRefs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(ROOT, "book_refs.md")) as f:
            cls.text = f.read()
        cls.refs = re.findall(r"`([\w./-]+\.(?:cuh|cu|c|h|py)):(\w+)`", cls.text)

    def test_names_some_code(self):
        self.assertGreater(len(self.refs), 30)

    def test_every_file_and_function_exists(self):
        missing = []
        for path, fn in self.refs:
            p = os.path.join(ROOT, path)
            if not os.path.isfile(p):
                missing.append(f"{path} (no such file)")
                continue
            with open(p) as f:
                src = f.read()
            # a definition: the name followed by '(' (C, CUDA) or 'def name(' (Python)
            if not re.search(r"\b%s\s*(\(|<)" % re.escape(fn), src):
                missing.append(f"{path}:{fn}")
        self.assertEqual(missing, [])

    def test_every_chapter_and_layer_has_a_row(self):
        chapters = sorted(d for d in os.listdir(ROOT) if re.fullmatch(r"ch\d\d", d)
                          and os.path.isfile(os.path.join(ROOT, d, "optimized.cu")))
        for ch in chapters:
            self.assertTrue(re.search(r"\n\| %s \|" % ch[2:], self.text), f"{ch} has no row in book_refs.md")
        labs = os.path.join(ROOT, "labs")
        for d in sorted(os.listdir(labs)):
            if re.fullmatch(r"\d\d_\w+", d):
                self.assertTrue(f"labs/{d}" in self.text, f"labs/{d} has no row in book_refs.md")


if __name__ == "__main__":
    unittest.main()
