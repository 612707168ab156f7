"""SNP-17: the AMD KDS CRL (ARK-signed) of the chain's product, in a test-only AMD-shaped PKI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.errors import VerificationFailed
from attestation.policy import Policy, SnpPolicy
from attestation.snp.verify import verify_snp
from attestation.trust_fetch import snp_crl
from tests.support.snp_pki import NOW, World

REQUIRED = Policy(any_measurement=True, snp=SnpPolicy(require_crl=True))


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _fails(world: World, crls: tuple[bytes, ...], policy: Policy = REQUIRED,
           **kw: object) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as info:
        world.verify(crls, policy, **kw)  # type: ignore[arg-type]
    assert info.value.step == "SNP-17", str(info.value)
    return info.value


def test_without_a_crl_the_step_passes_unless_required(world: World) -> None:
    assert "SNP-17" in world.verify().steps
    assert "requires one" in _fails(world, ()).reason


def test_a_current_crl_that_revokes_nothing_passes(world: World) -> None:
    for crl in (world.crl(), world.crl(pem=True)):
        steps = world.verify((crl,), REQUIRED).steps
        assert steps.index("SNP-17") == steps.index("SNP-5") + 1


def test_revoked_ask_is_refused(world: World) -> None:
    assert "ASK" in _fails(world, (world.crl((world.ask,)),)).reason
    assert "revoked" in _fails(world, (world.crl((world.vcek,)),)).reason


@pytest.mark.parametrize(("this", "nxt"), [(-10, -1), (1, 10)])
def test_stale_or_future_crl_is_refused(world: World, this: int, nxt: int) -> None:
    crl = world.crl(this_update=NOW + timedelta(days=this), next_update=NOW + timedelta(days=nxt))
    assert "not current" in _fails(world, (crl,)).reason


def test_bad_crl_signature_is_refused(world: World) -> None:
    forged = world.crl(signer=rsa.generate_private_key(65537, 2048))
    assert "signature does not verify" in _fails(world, (forged,)).reason
    assert "not a DER or PEM CRL" in _fails(world, (b"\x30\x03\x02\x01\x00",)).reason


def test_a_crl_in_the_arks_name_signed_by_another_key_is_refused(world: World) -> None:
    other = World()  # same names, other keys
    assert "signature does not verify" in _fails(world, (other.crl((world.ask,)),)).reason


def test_real_chain_with_a_crl_required_and_none_given(vectors: Path) -> None:
    snp = vectors / "sev-snp"
    chain = [(snp / "vcek.testcer").read_bytes(), (snp / "amd-roots" / "ask_ark_milan.pem")
             .read_bytes()]
    lenient = Policy(any_measurement=True, snp=SnpPolicy(allow_debug=True, require_crl=True))
    with pytest.raises(VerificationFailed) as info:
        verify_snp((snp / "attestation.bin").read_bytes(), chain, lenient, NOW)
    assert info.value.step == "SNP-17" and "ARK-Milan" in info.value.reason


def test_trust_fetcher_request() -> None:
    request = snp_crl("Genoa")
    assert (request.path, request.key) == ("/vcek/v1/Genoa/crl", "amd/vcek/Genoa/crl.der")
    assert snp_crl("Milan", "vlek").path == "/vlek/v1/Milan/crl"
