"""Tests of scripts/check_expectations: classification, update, schema (stdlib unittest)."""
import importlib.machinery
import importlib.util
import json
import os
import shutil
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
_loader = importlib.machinery.SourceFileLoader(
    "check_expectations", os.path.join(HERE, "..", "scripts", "check_expectations"))
_spec = importlib.util.spec_from_loader("check_expectations", _loader)
ce = importlib.util.module_from_spec(_spec)
_loader.exec_module(ce)


def line(variant, ms, status="PASS", key="h200", workload="w1"):
    return {"schema": "gauntlet.v1", "target": "ch07", "variant": variant, "median_ms": ms,
            "p95_ms": ms * 1.1, "status": status, "hardware_key": key, "gpu": "NVIDIA H200",
            "workload": workload, "iters": 100, "git": "abc", "gbps": 100.0}


def exp_with(stored_ms, floor=3.0):
    return {"schema": ce.SCHEMA, "hardware_key": "h200", "tolerance": 0.25, "ceilings": {},
            "entries": {"ch07": {"workload": "w1", "min_speedup": floor,
                                 "optimized": {"median_ms": stored_ms},
                                 "baseline": {"median_ms": stored_ms * 4}}}}


class Classify(unittest.TestCase):
    def test_invalid_when_a_program_failed_validation(self):
        v, _, _ = ce.classify("ch07", line("baseline", 4), line("optimized", 1, "FAIL"), exp_with(1))
        self.assertEqual(v, "INVALID")

    def test_fail_below_floor(self):
        v, s, _ = ce.classify("ch07", line("baseline", 2.9), line("optimized", 1), exp_with(1))
        self.assertEqual(v, "FAIL")
        self.assertAlmostEqual(s, 2.9)

    def test_regressed_improved_met_around_the_tolerance(self):
        b = line("baseline", 100)
        self.assertEqual(ce.classify("ch07", b, line("optimized", 1.26), exp_with(1))[0], "REGRESSED")
        self.assertEqual(ce.classify("ch07", b, line("optimized", 1.24), exp_with(1))[0], "MET")
        self.assertEqual(ce.classify("ch07", b, line("optimized", 0.79), exp_with(1))[0], "IMPROVED")
        self.assertEqual(ce.classify("ch07", b, line("optimized", 0.81), exp_with(1))[0], "MET")

    def test_no_entry_uses_the_curriculum_floor(self):
        v, _, _ = ce.classify("ch07", line("baseline", 4), line("optimized", 1), None)
        self.assertEqual(v, "NO_ENTRY")
        v, _, _ = ce.classify("ch07", line("baseline", 2), line("optimized", 1), None)
        self.assertEqual(v, "FAIL")  # ch07 floor is 3x


    def test_ch17_speedup_is_on_the_p99(self):
        b, o = line("baseline", 0.21), line("optimized", 0.49)  # median worse on purpose
        b["p99_ms"], o["p99_ms"] = 2.06, 0.63
        v, s, _ = ce.classify("ch17", b, o, None)
        self.assertAlmostEqual(s, 2.06 / 0.63)
        self.assertEqual(v, "NO_ENTRY")  # 3.3x >= the 2x floor, nothing stored yet


class UpdateAndSchema(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.old = ce.EXP_DIR
        ce.EXP_DIR = os.path.join(self.tmp, "exp")
        os.makedirs(ce.EXP_DIR)
        self.res = os.path.join(self.tmp, "res")
        os.makedirs(self.res)

    def tearDown(self):
        ce.EXP_DIR = self.old
        shutil.rmtree(self.tmp)

    def write(self, name, obj):
        with open(os.path.join(self.res, name), "w") as f:
            f.write(json.dumps(obj) + "\n")

    def test_update_computes_speedup_and_validates(self):
        self.write("ch07.baseline.json", line("baseline", 0.3))
        self.write("ch07.optimized.json", line("optimized", 0.1))
        self.assertEqual(ce.main(["update", self.res, "--command", "scripts/pair.sh ch07"]), 0)
        with open(os.path.join(ce.EXP_DIR, "h200.json")) as f:
            exp = json.load(f)
        self.assertAlmostEqual(exp["entries"]["ch07"]["speedup"], 3.0)
        self.assertEqual(ce.validate_exp(exp, os.path.join(ce.EXP_DIR, "h200.json")), [])

    def test_update_recomputes_pct_against_stored_ceilings(self):
        with open(os.path.join(ce.EXP_DIR, "h200.json"), "w") as f:
            json.dump({"schema": ce.SCHEMA, "hardware_key": "h200", "tolerance": 0.25,
                       "ceilings": {"copy_gbps": 4000.0}, "entries": {}}, f)
        b, o = line("baseline", 0.3), line("optimized", 0.1)
        o["ceiling"] = b["ceiling"] = "copy_gbps"
        o["gbps"], o["pct_of_ceiling"] = 3000.0, 62.5  # 62.5: against a datasheet 4800
        self.write("ch07.baseline.json", b)
        self.write("ch07.optimized.json", o)
        self.assertEqual(ce.main(["update", self.res, "--command", "x"]), 0)
        with open(os.path.join(ce.EXP_DIR, "h200.json")) as f:
            e = json.load(f)["entries"]["ch07"]
        self.assertAlmostEqual(e["optimized"]["pct_of_ceiling"], 75.0)

    def test_lab_entry_keeps_operating_points_and_validates(self):
        for name, ms, batch in (("b1.json", 110.0, 1), ("b64.json", 1250.0, 64)):
            l = line("decode", ms, workload=f"gptoss20b_B{batch}")
            l.update({"tokens_per_s": 1000.0 * batch / ms, "ms_per_token": ms, "batch": batch})
            self.write(name, l)
        files = [os.path.join(self.res, f) for f in ("b1.json", "b64.json")]
        self.assertEqual(ce.main(["update-lab", *files, "--target", "labs/00_baseline",
                                  "--command", "decode"]), 0)
        path = os.path.join(ce.EXP_DIR, "h200.json")
        with open(path) as f:
            exp = json.load(f)
        e = exp["entries"]["labs/00_baseline"]
        self.assertEqual(sorted(e["operating_points"]), ["gptoss20b_B1", "gptoss20b_B64"])
        self.assertEqual(e["optimized"]["median_ms"], 110.0)  # the first file (batch 1) heads
        self.assertAlmostEqual(e["operating_points"]["gptoss20b_B64"]["tokens_per_s"], 64000.0 / 1250.0)
        self.assertEqual(ce.validate_exp(exp, path), [])
        # A later layer is measured against layer 00's line at the same workload: the
        # speedup is computed from the two medians (110 / 44 = 2.5), never typed.
        l = line("decode", 44.0, workload="gptoss20b_B1")
        l.update({"tokens_per_s": 1000.0 / 44.0, "ms_per_token": 44.0, "batch": 1})
        self.write("l01.json", l)
        self.assertEqual(ce.main(["update-lab", os.path.join(self.res, "l01.json"), "--target",
                                  "labs/01_basics", "--baseline", files[0], "--command", "decode"]), 0)
        with open(path) as f:
            e1 = json.load(f)["entries"]["labs/01_basics"]
        self.assertEqual(e1["baseline"]["median_ms"], 110.0)
        self.assertEqual(e1["speedup"], 2.5)

    def test_lab_entry_keep_points_merges_other_workloads_only(self):
        def rec(name, ms, workload, *extra):
            l = line("decode", ms, workload=workload)
            l.update({"tokens_per_s": 1000.0 / ms, "ms_per_token": ms, "batch": 1})
            self.write(name, l)
            return ce.main(["update-lab", os.path.join(self.res, name), "--target",
                            "labs/00_baseline", "--command", "decode", *extra])
        path = os.path.join(ce.EXP_DIR, "h200.json")
        self.assertEqual(rec("a.json", 110.0, "mixtral_B1"), 0)
        self.assertEqual(rec("b.json", 100.0, "gptoss_B1", "--keep-points"), 0)
        with open(path) as f:
            e = json.load(f)["entries"]["labs/00_baseline"]
        self.assertEqual(sorted(e["operating_points"]), ["gptoss_B1", "mixtral_B1"])
        self.assertEqual(e["workload"], "gptoss_B1")  # the files' point heads the entry
        self.assertEqual(e["operating_points"]["mixtral_B1"]["median_ms"], 110.0)
        # a re-measured workload replaces its old point; without the flag the rest go
        self.assertEqual(rec("c.json", 90.0, "gptoss_B1", "--keep-points"), 0)
        with open(path) as f:
            e = json.load(f)["entries"]["labs/00_baseline"]
        self.assertEqual(e["operating_points"]["gptoss_B1"]["median_ms"], 90.0)
        self.assertEqual(rec("d.json", 80.0, "gptoss_B1"), 0)
        with open(path) as f:
            e = json.load(f)["entries"]["labs/00_baseline"]
        self.assertEqual(sorted(e["operating_points"]), ["gptoss_B1"])

    def test_attached_table_rows_are_parsed_by_named_columns(self):
        path = os.path.join(self.res, "sweep.txt")
        with open(path, "w") as f:
            f.write("# header\nmode   SMs P+D  p99_ms  check_sm (decode, prefill)\n"
                    "graph  shared   1.064  shared 132, 132\nsplit  96+36    0.629  PASS 36, 96\n\n"
                    "best decode p99: split\n")
        rows = ce.parse_table(path, "mode", ["mode", "sms", "p99_ms", "check_sm"])
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[1], {"mode": "split", "sms": "96+36", "p99_ms": 0.629,
                                   "check_sm": "PASS 36, 96"})

    def test_only_tables_attached_with_readme_reach_the_chapter_readme(self):
        e = {"baseline": {"median_ms": 4.0}, "optimized": {"median_ms": 1.0}, "speedup": 4.0,
             "min_speedup": 4.0, "workload": "w1", "provenance": {"command": "x"},
             "sweep": {"rows": [{"T": 1.0, "ms": 0.05}], "readme": True,
                       "provenance": {"command": "ch15/sweep.sh", "git": "abc"}},
             "other": {"rows": [{"mode": "hidden"}], "provenance": {"command": "y"}}}
        text = ce.chapter_table("ch15", e)
        self.assertIn("| T | ms |", text)
        self.assertIn("| 1 | 0.05 |", text)
        self.assertIn("`ch15/sweep.sh`", text)
        self.assertNotIn("hidden", text)

    def test_waived_programs_are_skipped(self):
        open(os.path.join(self.res, "ch04.baseline.json"), "w").close()  # waived: no line
        self.write("ch07.baseline.json", line("baseline", 0.3))
        self.write("ch07.optimized.json", line("optimized", 0.1))
        self.assertEqual(ce.main(["update", self.res, "--command", "x"]), 0)
        with open(os.path.join(ce.EXP_DIR, "h200.json")) as f:
            self.assertEqual(list(json.load(f)["entries"]), ["ch07"])

    def test_update_refuses_another_hardware_key(self):
        with open(os.path.join(ce.EXP_DIR, "h200.json"), "w") as f:
            json.dump({"schema": ce.SCHEMA, "hardware_key": "h100", "tolerance": 0.25,
                       "ceilings": {}, "entries": {}}, f)
        self.write("ch07.baseline.json", line("baseline", 0.3))
        self.write("ch07.optimized.json", line("optimized", 0.1))
        self.assertEqual(ce.main(["update", self.res, "--command", "x"]), 1)

    def test_failed_results_are_not_recorded(self):
        self.write("ch07.baseline.json", line("baseline", 0.3))
        self.write("ch07.optimized.json", line("optimized", 0.1, "FAIL"))
        self.assertEqual(ce.main(["update", self.res, "--command", "x"]), 1)
        self.assertFalse(os.path.exists(os.path.join(ce.EXP_DIR, "h200.json")))

    def test_schema_catches_a_typed_speedup_and_missing_provenance(self):
        exp = {"schema": ce.SCHEMA, "hardware_key": "h200", "tolerance": 0.25, "ceilings": {},
               "entries": {"ch07": {"metric": "median_ms", "direction": "lower", "workload": "w",
                                    "baseline": {"median_ms": 3.0, "status": "PASS"},
                                    "optimized": {"median_ms": 1.0, "status": "PASS"},
                                    "speedup": 5.0, "min_speedup": 3.0, "provenance": {}}}}
        errs = ce.validate_exp(exp, "h200.json")
        self.assertTrue(any("speedup 5.0" in e for e in errs))
        self.assertTrue(any("provenance.command" in e for e in errs))

    def test_schema_requires_measured_ceilings_provenance(self):
        exp = {"schema": ce.SCHEMA, "hardware_key": "h200", "tolerance": 0.25,
               "ceilings": {"copy_gbps": 4000}, "entries": {}}
        self.assertTrue(any("ceilings_provenance" in e for e in ce.validate_exp(exp, "h200.json")))
        exp["ceilings"]["copy_gbps"] = -1
        self.assertTrue(any("positive" in e for e in ce.validate_exp(exp, "h200.json")))


if __name__ == "__main__":
    unittest.main()
