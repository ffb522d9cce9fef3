"""benchmarks/bench_common's CPU description: the name a figure is reported with must tell apart
CPUs that a VM names alike, and the flags come from the same (first) processor."""

from __future__ import annotations

from benchmarks.bench_common import cpu_fields, cpu_flags, cpu_model

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx2 avx512f avx512_bf16

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Another Name
flags\t\t: fpu amx_bf16
"""


def test_model_names_family_and_model_of_the_first_processor() -> None:
    fields = cpu_fields(CPUINFO)
    assert cpu_model(fields) == "Intel(R) Xeon(R) Processor (family 6, model 207)"


def test_flags_are_the_first_processors() -> None:
    flags = cpu_flags(cpu_fields(CPUINFO))
    assert {"avx2", "avx512_bf16"} <= flags
    assert "amx_bf16" not in flags


def test_without_family_the_name_alone() -> None:
    assert cpu_model({"model name": "AMD EPYC"}) == "AMD EPYC"
    assert cpu_flags({}) == set()
