"""Tests of the quest-log scripts (scripts/gauntlet.sh, pair.sh, run_all.sh) and of
check_expectations' command-line verdicts, with recorded JSON lines and no GPU.

Each test builds a throw-away project folder: the real scripts, an expectations file,
and chapters whose `baseline` / `optimized` are small shell programs that print a
recorded result line and exit as a real program would (0 PASS, 1 validation FAIL,
77 waived). NO_BUILD=1 keeps make out of it."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def result_line(target, variant, ms, status="PASS"):
    return {"schema": "gauntlet.v1", "target": target, "variant": variant, "median_ms": ms,
            "p95_ms": ms, "p99_ms": ms, "status": status, "hardware_key": "h200",
            "gpu": "NVIDIA H200", "workload": "w", "iters": 10, "git": "abc", "gbps": 1.0}


class QuestLog(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        shutil.copytree(os.path.join(ROOT, "scripts"), os.path.join(self.dir, "scripts"))
        os.makedirs(os.path.join(self.dir, "expectations"))
        with open(os.path.join(self.dir, "expectations", "h200.json"), "w") as f:
            json.dump({"schema": "gauntlet.expectations.v1", "hardware_key": "h200",
                       "gpu": "NVIDIA H200", "tolerance": 0.25, "ceilings": {}, "entries": {}}, f)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def chapter(self, ch, base, opt):
        """base/opt: (median_ms, status, exit code); exit 77 prints the one WAIVED line."""
        d = os.path.join(self.dir, ch)
        os.makedirs(d)
        for v, (ms, status, rc) in (("baseline", base), ("optimized", opt)):
            open(os.path.join(d, v + ".cu"), "w").close()
            p = os.path.join(d, v)
            with open(p, "w") as f:
                if rc == 77:
                    f.write("#!/bin/sh\necho 'WAIVED: needs a CUDA GPU; none found'\nexit 77\n")
                else:
                    f.write("#!/bin/sh\necho '%s'\nexit %d\n" % (json.dumps(result_line(ch, v, ms, status), separators=(",", ":")), rc))
            os.chmod(p, 0o755)

    def run_script(self, *args):
        env = dict(os.environ, NO_BUILD="1")
        env.pop("RESULTS_DIR", None)
        p = subprocess.run(list(args), cwd=self.dir, env=env, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout + p.stderr

    def test_all_waived_is_not_played_and_fails(self):
        for ch in ("ch01", "ch02", "ch03", "ch04", "ch05", "ch06"):
            self.chapter(ch, (0, "", 77), (0, "", 77))
        rc, out = self.run_script("scripts/gauntlet.sh", "act1")
        self.assertIn("0 won, 0 lost, 6 not played, 0 locked", out)
        self.assertNotEqual(rc, 0)

    def test_won_lost_not_played_and_locked_are_told_apart(self):
        self.chapter("ch01", (4.0, "PASS", 0), (1.0, "PASS", 0))   # 4x >= 3x floor: won
        self.chapter("ch02", (4.0, "PASS", 0), (1.0, "PASS", 0))   # 4x < 5x floor: lost
        self.chapter("ch03", (4.0, "PASS", 0), (1.0, "FAIL", 1))   # validation failed: lost
        self.chapter("ch04", (0, "", 77), (0, "", 77))             # waived: not played
        rc, out = self.run_script("scripts/gauntlet.sh", "act1")
        self.assertIn("1 won, 2 lost, 1 not played, 2 locked", out)
        self.assertIn("[won] ch01", out)
        self.assertIn("[lost] ch02", out)
        self.assertIn("[lost] ch03", out)
        self.assertNotEqual(rc, 0)
        rc, out = self.run_script("scripts/gauntlet.sh", "scoreboard")
        self.assertIn("scoreboard: 1 won, 2 lost, 1 not played", out)
        self.assertIn("INVALID", out)  # ch03: its failed line is on the card
        self.assertNotEqual(rc, 0)

    def test_every_fight_won_exits_zero(self):
        self.chapter("ch07", (4.0, "PASS", 0), (1.0, "PASS", 0))
        self.chapter("ch08", (2.0, "PASS", 0), (1.0, "PASS", 0))
        rc, out = self.run_script("scripts/gauntlet.sh", "act2")
        self.assertIn("2 won, 0 lost, 0 not played, 2 locked", out)
        self.assertEqual(rc, 0)
        rc, out = self.run_script("scripts/gauntlet.sh", "scoreboard")
        self.assertIn("scoreboard: 2 won, 0 lost, 0 not played", out)
        self.assertEqual(rc, 0)

    def test_pair_exit_codes(self):
        self.chapter("ch07", (4.0, "PASS", 0), (1.0, "PASS", 0))
        self.chapter("ch08", (1.2, "PASS", 0), (1.0, "PASS", 0))
        self.chapter("ch09", (0, "", 77), (0, "", 77))
        self.assertEqual(self.run_script("scripts/pair.sh", "ch07")[0], 0)
        rc, out = self.run_script("scripts/pair.sh", "ch08")
        self.assertEqual(rc, 1)
        self.assertIn("FAIL", out)
        self.assertEqual(self.run_script("scripts/pair.sh", "ch09")[0], 77)
        self.assertEqual(self.run_script("scripts/pair.sh", "nope")[0], 2)

    def test_run_all_fails_when_one_pair_fails(self):
        self.chapter("ch07", (4.0, "PASS", 0), (1.0, "PASS", 0))
        self.chapter("ch08", (4.0, "PASS", 0), (1.0, "FAIL", 1))
        rc, out = self.run_script("scripts/run_all.sh")
        self.assertNotEqual(rc, 0)
        self.assertIn("ch07     NO_ENTRY", out)

    def test_check_expectations_refuses_missing_folders_and_targets(self):
        ce = os.path.join("scripts", "check_expectations")
        rc, out = self.run_script("python3", ce, "check", "/nonexistent/results")
        self.assertEqual(rc, 2)
        self.assertIn("no such results folder", out)
        os.makedirs(os.path.join(self.dir, "empty"))
        rc, out = self.run_script("python3", ce, "check", "empty")
        self.assertEqual(rc, 1)
        rc, out = self.run_script("python3", ce, "floor", "ch99")
        self.assertEqual(rc, 2)
        rc, out = self.run_script("python3", ce, "floor", "ch07")
        self.assertEqual((rc, out.strip()), (0, "3.0"))


CUDA_BIN = os.path.dirname(shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")
TOOLS_BIN = os.path.join(ROOT, "build", "tools", "nvidia", "cu13", "bin")
SASS_PATH = os.pathsep.join([os.environ.get("PATH", ""), CUDA_BIN, TOOLS_BIN])


@unittest.skipUnless(shutil.which("nvcc", path=SASS_PATH) and shutil.which("cuobjdump", path=SASS_PATH),
                     "needs nvcc and cuobjdump (make test-deps installs cuobjdump)")
class SassCheck(unittest.TestCase):
    """scripts/sass_check.py must fail on a kernel that lacks the claimed instruction, even
    when another function of the same binary has it."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        src = os.path.join(cls.dir, "k.cu")
        with open(src, "w") as f:
            f.write("__global__ void with_shuffle_kernel(float *x) {\n"
                    "  float v = x[threadIdx.x];\n"
                    "  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n"
                    "  x[threadIdx.x] = v;\n}\n"
                    "__global__ void plain_kernel(float *x) { x[threadIdx.x] *= 2.0f; }\n")
        cls.cubin = os.path.join(cls.dir, "k.cubin")
        subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", cls.cubin, src], check=True,
                       env=dict(os.environ, PATH=SASS_PATH), capture_output=True, timeout=300)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def check(self, *args):
        p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "sass_check.py"), self.cubin, *args],
                           env=dict(os.environ, PATH=SASS_PATH), capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout

    def test_instruction_found_in_the_named_kernel(self):
        self.assertEqual(self.check("@with_shuffle", "SHFL.BFLY")[0], 0)

    def test_kernel_without_it_fails_although_the_binary_has_it(self):
        self.assertEqual(self.check("SHFL.BFLY")[0], 0)  # the whole binary has one
        rc, out = self.check("@plain_kernel", "SHFL.BFLY")
        self.assertEqual(rc, 1)
        self.assertIn("no SHFL.BFLY", out)

    def test_absence_claims(self):
        self.assertEqual(self.check("@plain_kernel", "!SHFL.BFLY")[0], 0)
        self.assertEqual(self.check("@with_shuffle", "!SHFL.BFLY")[0], 1)

    def test_unknown_kernel_fails(self):
        self.assertEqual(self.check("@no_such_kernel", "FFMA")[0], 1)

    def test_baseline_binary_lacking_the_lessons_instruction_fails(self):
        # ch08's lesson: the warp-per-row kernel adds 16-byte loads and a shuffle reduction;
        # its baseline's block-per-row kernel has neither, although the binary does (common's
        # L2 flush has 16-byte loads), so only the per-kernel check tells them apart.
        prog = os.path.join(ROOT, "ch08", "baseline")
        if not os.access(prog, os.X_OK):
            self.skipTest("ch08/baseline is not built")
        run = lambda *a: subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "sass_check.py"), prog, *a],
                                        env=dict(os.environ, PATH=SASS_PATH), capture_output=True, text=True,
                                        timeout=120).returncode
        self.assertEqual(run("LDG.E.128"), 0)
        self.assertEqual(run("@gemv_blockrow", "LDG.E.128"), 1)
        self.assertEqual(run("@gemv_blockrow", "SHFL.BFLY"), 1)


class VariantHelp(unittest.TestCase):
    """A program with several kernels names them: in --help, and when --variant is wrong."""

    def check(self, prog, names):
        exe = os.path.join(ROOT, prog)
        if not os.access(exe, os.X_OK):
            self.skipTest(f"{prog} is not built")
        p = subprocess.run([exe, "--variant=nope"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn(f"this program has: {names}", p.stderr)
        p = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0)
        self.assertIn(names, p.stdout)

    def test_ch07_lists_its_kernels(self):
        self.check("ch07/optimized", "bulk, warp")

    def test_ch10_lists_its_kernels(self):
        self.check("ch10/optimized", "wgmma, mma")


class LabCheckpointFlags(unittest.TestCase):
    """The lab's host-only checkpoint paths (no GPU): --write-checkpoint never writes into a
    folder holding anything unless --force; --check-model accepts what the writer wrote,
    names the tensor of a corrupted header (exit 3) and changes nothing in the folder."""
    DECODE = os.path.join(ROOT, "labs", "00_baseline", "decode")

    def setUp(self):
        if not os.access(self.DECODE, os.X_OK):
            self.skipTest("labs/00_baseline/decode is not built")
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.dir)

    def decode(self, *args):
        p = subprocess.run([self.DECODE, *args], capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout + p.stderr

    def snapshot(self, d):
        out = {}
        for n in sorted(os.listdir(d)):
            with open(os.path.join(d, n), "rb") as f:
                out[n] = (f.read(), os.stat(os.path.join(d, n)).st_mtime_ns)
        return out

    def test_write_refuses_a_folder_with_files(self):
        ck = os.path.join(self.dir, "ck")
        os.makedirs(ck)
        mine = os.path.join(ck, "notes.txt")
        with open(mine, "w") as f:
            f.write("a user's file")
        rc, out = self.decode("--preset=tiny_mixtral", f"--write-checkpoint={ck}")
        self.assertEqual(rc, 2)
        self.assertIn("not empty", out)
        self.assertEqual(os.listdir(ck), ["notes.txt"])  # nothing written
        rc, _ = self.decode("--preset=tiny_mixtral", f"--write-checkpoint={ck}", "--force")
        self.assertEqual(rc, 0)
        with open(mine) as f:
            self.assertEqual(f.read(), "a user's file")  # --force writes beside, not over it

    def test_check_model_accepts_names_and_only_reads(self):
        ck = os.path.join(self.dir, "ck")
        self.assertEqual(self.decode("--preset=tiny_mixtral", f"--write-checkpoint={ck}")[0], 0)
        before = self.snapshot(ck)
        rc, out = self.decode(f"--check-model={ck}")
        self.assertEqual(rc, 0, out)
        self.assertIn("OK", out)
        self.assertEqual(self.snapshot(ck), before)
        path = os.path.join(ck, "model.safetensors")
        with open(path, "r+b") as f:  # grow the first tensor's first dimension in the header
            head = f.read(4096)
            i = head.index(b'"shape":[') + len(b'"shape":[')
            f.seek(i)
            f.write(b"9")
        rc, out = self.decode(f"--check-model={ck}")
        self.assertEqual(rc, 3)
        self.assertRegex(out, r'tensor "[\w.]+"')


if __name__ == "__main__":
    unittest.main()
