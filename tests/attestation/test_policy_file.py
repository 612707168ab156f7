"""Policy files: strict YAML, every problem reported at file:line:col, no emulated switch."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import PolicyError
from attestation.policy_file import load_policy

M = "ab" * 48
GOOD = f"""
allowed_measurements:
  - {M}
  - "{'cd' * 48}"
snp:
  allow_debug: false
  allow_smt: true
  max_vmpl: 0
  minimum_tcb: {{bootloader: 3, tee: 0, snp: 8, microcode: 115}}
  host_data: "{'00' * 32}"
tdx:
  accepted_tcb_status: [UpToDate, SWHardeningNeeded]
  rtmrs: {{"0": "{'11' * 48}"}}
  xfam: "e702060000000000"
  allow_trailing_bytes: false
"""


def test_good_policy_round_trip() -> None:
    policy = load_policy(GOOD, "p.yaml")
    assert policy.allowed_measurements == {bytes.fromhex(M), bytes.fromhex("cd" * 48)}
    assert not policy.any_measurement and not policy.snp.allow_debug
    assert policy.snp.minimum_tcb == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert policy.tdx.accepted_tcb_status == {"UpToDate", "SWHardeningNeeded"}
    assert policy.tdx.rtmrs == {0: b"\x11" * 48}
    assert not policy.tdx.allow_trailing_bytes
    assert load_policy("any_measurement: true\n", "p.yaml").tdx.allow_trailing_bytes


@pytest.mark.parametrize(("text", "where", "words"), [
    ("allowed_measurements: []\n", "1:1", "any_measurement: true"),
    (f"allowed_measurements: [{M}]\nallowed_measurements: [{M}]\n", "2:1", "duplicate key"),
    (f"allowed_measurements: [{M}]\nsnp: {{allow_debug: no}}\n", "2:20", "ambiguous"),
    (f"allowed_measurements: [{M}]\nsnp: {{max_vmpl: 010}}\n", "2:17", "ambiguous"),
    (f"allowed_measurements: [{M}]\nsnp: {{max_vmpl: 4}}\n", "2:17", "between 0 and 3"),
    (f"allowed_measurements: [{M}]\nsnp: {{allow_debug: 1}}\n", "2:20", "true or false"),
    (f"allowed_measurements: [{M}]\nsnp: {{debug: true}}\n", "2:7", "unknown key 'debug'"),
    (f"allowed_measurements: [{M}]\nmeasurement: x\n", "2:1", "unknown key"),
    ("allowed_measurements: [abcd]\n", "1:24", "48 bytes"),
    ("allowed_measurements: [xyz]\n", "1:24", "must be hex"),
    (f"a: &m {M}\nallowed_measurements: [*m]\n", "1:4", "anchors"),
    (f"allowed_measurements: [{M}]\nallow_emulated: true\n", "2:17", "--allow-emulated"),
    (f"allowed_measurements: [{M}]\nsnp: {{allow_emulated: true}}\n", "2:23", "--allow-emulated"),
    (f"allowed_measurements: [{M}]\ntdx: {{accepted_tcb_status: [Fine]}}\n", "2:29", "Fine"),
    ("allowed_measurements: [\n", "2:1", ""),
    ("- just a list\n", "1:1", "mapping"),
])
def test_bad_policies_name_the_position(text: str, where: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, "p.yaml")
    assert str(caught.value).startswith(f"p.yaml:{where}:"), str(caught.value)
    assert words in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_loader_raises_only_policy_errors(text: str) -> None:
    with contextlib.suppress(PolicyError):
        load_policy(text, "fuzz.yaml")
