# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The core's CmpClient against OpenSSL's built-in CMP mock server (`openssl cmp -port ...`).

The mock always answers with the -rsp_cert it was started with, so each test issues that certificate
for the key the client enrolls with. The mock's log shows how many CMP requests it received.

The mock authenticates with a shared secret (-srv_ref/-srv_secret: PBM both ways) or, for the
signature tests, with a certificate and key (-srv_cert/-srv_key: it signs its responses and verifies
the client's signed kur/rr against -srv_trusted).
"""

from __future__ import annotations

import datetime
import subprocess
import time

import pytest
from cmp_helpers import write_key
from conftest import free_port, http, openssl, require_binary, urllib_transport
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from trustpoint_core import keys, profiles, signatures
from trustpoint_core import x509 as tp_x509
from trustpoint_core.cmp_client import CmpClient, MacCredential, SignatureCredential
from trustpoint_core.cmp_message import CmpMessage
from trustpoint_core.errors import CmpFailure, TransportError

SECRET = "mock-secret"
REFERENCE = "11"
SUBJECT = tp_x509.parse_name("/CN=Trustpoint Domain Credential/O=Mock Test")
PBM_AUTH = ("-srv_ref", REFERENCE, "-srv_secret", "pass:" + SECRET)
ID_KP_CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")


class Mock:
    """One `openssl cmp` mock server process on a free loopback port."""

    def __init__(self, directory, rsp_cert, ca, extra_args=(), auth=PBM_AUTH):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/pkix/" % self.port
        paths = {name: directory / ("%s.pem" % name) for name in ("rsp_cert", "chain", "root")}
        paths["rsp_cert"].write_text(tp_x509.certificates_to_pem(rsp_cert))
        paths["chain"].write_text(tp_x509.certificates_to_pem(ca.chain))
        paths["root"].write_text(tp_x509.certificates_to_pem(ca.root_cert))
        self.log_path = directory / ("mock-%d.log" % self.port)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (open for the process's lifetime)
        self.process = subprocess.Popen(
            [
                require_binary("openssl"),
                "cmp",
                "-port",
                str(self.port),
                *auth,
                "-rsp_cert",
                str(paths["rsp_cert"]),
                "-rsp_extracerts",
                str(paths["chain"]),
                "-rsp_capubs",
                str(paths["root"]),
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            # A GET gets a quick 400; a bare TCP connect would stall the mock's next request.
            try:
                http("GET", self.url, timeout=2)
                break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("openssl cmp mock did not start:\n" + self.log())
            time.sleep(0.05)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def requests(self):
        """How many CMP requests (POSTs) the mock received."""
        return self.log().count("1st line: POST ")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def ca():
    return tp_x509.CaChain.create("mock", "ecdsa-p256")


@pytest.fixture
def device_key():
    return keys.generate_private_key("ecdsa-p256")


@pytest.fixture
def start_mock(tmp_path, ca, device_key):
    """start_mock(*extra mock args, rsp_key=device_key, rsp_cert=None, auth=PBM_AUTH) -> a running Mock
    returning rsp_cert, by default a new certificate for rsp_key; auth: the mock's credentials."""
    mocks = []

    def start(*extra_args, rsp_key=None, rsp_cert=None, auth=PBM_AUTH):
        if rsp_cert is None:
            rsp_cert = tp_x509.issue_certificate(
                ca.issuing_cert,
                ca.issuing_key,
                (rsp_key or device_key).public_key(),
                SUBJECT,
                profiles.DOMAIN_CREDENTIAL,
            )
        mock = Mock(tmp_path, rsp_cert, ca, extra_args, auth)
        mock.rsp_cert = rsp_cert
        mocks.append(mock)
        return mock

    yield start
    for mock in mocks:
        mock.stop()


def enroll(mock, key, secret=SECRET, implicit_confirm=False):
    client = CmpClient(mock.url, urllib_transport)
    return client.initialize(key, SUBJECT, MacCredential(REFERENCE, secret), implicit_confirm=implicit_confirm)


def test_enroll_with_explicit_confirmation(start_mock, device_key, ca):
    """ir + certConf: the client returns the mock's certificate, its extraCerts chain and caPubs, and confirms."""
    mock = start_mock()
    enrollment = enroll(mock, device_key)
    assert enrollment.certificate == mock.rsp_cert
    assert enrollment.chain == [ca.issuing_cert, ca.root_cert]
    assert enrollment.ca_certificates == [ca.root_cert]
    assert not enrollment.implicit_confirm
    assert mock.requests() == 2  # ir, certConf
    assert "rejected by client" not in mock.log()


def test_enroll_with_implicit_confirmation(start_mock, device_key, ca):
    """ir with implicitConfirm against -grant_implicitconf: one exchange, no certConf."""
    mock = start_mock("-grant_implicitconf")
    enrollment = enroll(mock, device_key, implicit_confirm=True)
    assert enrollment.certificate == mock.rsp_cert
    assert enrollment.chain == [ca.issuing_cert, ca.root_cert]
    assert enrollment.implicit_confirm
    assert mock.requests() == 1


def test_implicit_confirmation_not_granted(start_mock, device_key):
    """If the mock does not grant implicit confirmation, the client still sends certConf."""
    mock = start_mock()
    enrollment = enroll(mock, device_key, implicit_confirm=True)
    assert enrollment.certificate == mock.rsp_cert
    assert not enrollment.implicit_confirm
    assert mock.requests() == 2


def test_wrong_secret(start_mock, device_key):
    """A wrong secret: the mock rejects the ir's PBM with badRequest "wrong pbm value", which the client
    reports as an unauthenticated error (it cannot verify the mock's MAC either)."""
    mock = start_mock()
    with pytest.raises(CmpFailure) as info:
        enroll(mock, device_key, secret="not-the-secret")
    assert info.value.fail_info == ("badRequest",)
    assert info.value.text == "the server rejected the request (unauthenticated error): wrong pbm value"
    assert "wrong pbm value" in mock.log()
    assert mock.requests() == 1


def test_send_error(start_mock, device_key):
    """-send_error: the client reports the mock's authenticated error body, failInfo badRequest."""
    mock = start_mock("-send_error")
    with pytest.raises(CmpFailure) as info:
        enroll(mock, device_key)
    assert info.value.fail_info == ("badRequest",)
    assert info.value.text == "the server rejected the request: error processing message"


def test_rejection_in_ip(start_mock, device_key):
    """-pkistatus 2 -failure 9: an ip that rejects the request is reported with its failInfo and text."""
    mock = start_mock("-pkistatus", "2", "-failure", "9", "-statusstring", "no proof of possession")
    with pytest.raises(CmpFailure) as info:
        enroll(mock, device_key)
    assert info.value.fail_info == ("badPOP",)
    assert "no proof of possession" in info.value.text


def test_certificate_for_another_key(start_mock, device_key):
    """A returned certificate for another key is refused (badCertTemplate) instead of being kept."""
    mock = start_mock(rsp_key=keys.generate_private_key("ecdsa-p256"))
    with pytest.raises(CmpFailure) as info:
        enroll(mock, device_key)
    assert info.value.fail_info == ("badCertTemplate",)


def test_wrong_path_is_transport_error(start_mock, device_key):
    """The mock serves only /pkix/: another path is an HTTP 404, reported as TransportError."""
    mock = start_mock()
    client = CmpClient(mock.url.replace("/pkix/", "/other/"), urllib_transport)
    with pytest.raises(TransportError) as info:
        client.initialize(device_key, SUBJECT, MacCredential(REFERENCE, SECRET))
    assert "404" in str(info.value)


@pytest.mark.parametrize("key_type", ["ecdsa-p384", "rsa-2048"])
def test_enroll_other_key_types(start_mock, key_type, ca):
    """The ir's POP and the certificate match work for P-384 and RSA device keys too."""
    key = keys.generate_private_key(key_type)
    mock = start_mock(rsp_key=key)
    enrollment = enroll(mock, key)
    assert keys.same_public_key(enrollment.certificate.public_key(), key)
    assert enrollment.chain == [ca.issuing_cert, ca.root_cert]


# --- signature protection both ways: kur and rr signed by the client, responses signed by the mock ------


class Recorder:
    """A transport that keeps every (request, response) body it carried."""

    def __init__(self):
        self.exchanges = []

    def __call__(self, url, body, content_type):
        status, response_type, data = urllib_transport(url, body, content_type)
        if status == 200:  # else the client reports the HTTP status
            self.exchanges.append((CmpMessage.decode(body), CmpMessage.decode(data)))
        return status, response_type, data


def mock_signer_certificate(ca, public_key, name="Mock CMP RA", cmc_ra=True):
    """An end-entity certificate of the mock's signing key, issued by ca's issuing CA: a CMP RA (EKU
    id-kp-cmcRA), or with cmc_ra=False an ordinary client certificate that may not sign responses."""
    now = tp_x509.now_utc()
    usage = [ID_KP_CMC_RA] if cmc_ra else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.issuing_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.issuing_cert.public_key()), critical=False)
    )
    return builder.sign(ca.issuing_key, keys.hash_for(ca.issuing_key))


def rsa_pss_signer(directory, ca):
    """An RSASSA-PSS key (OpenSSL key type RSA-PSS, SPKI id-RSASSA-PSS) and its RA certificate: made with
    the openssl command line, since cryptography writes RSA keys as rsaEncryption only."""
    ca_key = write_key(directory / "pss-ca.key", ca.issuing_key)
    ca_cert = directory / "pss-ca.pem"
    ca_cert.write_text(tp_x509.certificates_to_pem([ca.issuing_cert]))
    key, csr, cert, ext = (directory / name for name in ("pss.key", "pss.csr", "pss.pem", "pss.ext"))
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=1.3.6.1.5.5.7.3.28\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl("genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=Mock CMP RA (RSA-PSS)", "-out", str(csr))
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-set_serial", "4711",
        "-days", "1", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return tp_x509.load_certificate(cert.read_bytes()), key


def signing_auth(directory, signer_cert, signer_key, signer_chain, client_root):
    """The mock's -srv_* arguments: sign responses with signer_key (a key object, or a PEM file's path)
    and signer_cert (whose chain goes into extraCerts), and trust client_root for the client's signatures."""
    stem = "srv-%s" % tp_x509.serial_hex(signer_cert)
    cert_path = directory / ("%s.pem" % stem)
    cert_path.write_text(tp_x509.certificates_to_pem([signer_cert]))
    chain_path = directory / ("%s-chain.pem" % stem)
    chain_path.write_text(tp_x509.certificates_to_pem(signer_chain))
    trusted_path = directory / ("%s-trusted.pem" % stem)
    trusted_path.write_text(tp_x509.certificates_to_pem([client_root]))
    key_path = signer_key if hasattr(signer_key, "is_file") else write_key(directory / ("%s.key" % stem), signer_key)
    return (
        "-srv_cert", str(cert_path), "-srv_key", str(key_path),
        "-srv_trusted", str(trusted_path), "-srv_untrusted", str(chain_path),
    )  # fmt: skip


# The mock's signing key -> the protectionAlg of its responses. OpenSSL signs with its default digest
# SHA-256 whatever the key (also with P-384).
# RSA-PSS and Ed25519: OpenSSL 3.0's CMP code cannot sign with such keys. It looks the protectionAlg up
# by (digest, key type) with OBJ_find_sigid_by_algs(SHA-256, ...), which knows no RSASSA-PSS or Ed25519
# pair, so the mock logs "unsupported key type" / "error protecting message" and answers HTTP 500 with
# no body. Those cases are tried and skipped (see skip_if_mock_cannot_sign), so a newer OpenSSL whose
# mock can sign with them runs them for real.
SIGNER_ALGORITHMS = {
    "issuing-ca": "1.2.840.10045.4.3.2",  # the domain's ECDSA issuing CA
    "ecdsa-p256": "1.2.840.10045.4.3.2",
    "ecdsa-p384": "1.2.840.10045.4.3.2",
    "rsa-2048": "1.2.840.113549.1.1.11",
    "rsa-pss": signatures.RSASSA_PSS,
    "ed25519": signatures.ED25519,
}


MOCK_MAY_NOT_SIGN = ("rsa-pss", "ed25519")


def skip_if_mock_cannot_sign(mock, signer, exchange):
    """Run exchange(); skip if it failed because the mock cannot sign with a key of signer's kind."""
    try:
        return exchange()
    except TransportError as exc:
        if signer in MOCK_MAY_NOT_SIGN and "CMP error: unsupported key type" in mock.log():
            version = openssl("version").stdout.strip()
            pytest.skip("%s: the CMP mock cannot sign with an %s key (%s)" % (version, signer, exc))
        raise


@pytest.fixture
def mock_signer(tmp_path, ca):
    """mock_signer(kind) -> the mock's -srv_* arguments: a signer of kind, trusted by the client through ca."""

    def make(kind):
        if kind == "issuing-ca":
            return signing_auth(tmp_path, ca.issuing_cert, ca.issuing_key, [ca.root_cert], ca.root_cert)
        if kind == "rsa-pss":
            cert, key_path = rsa_pss_signer(tmp_path, ca)
            return signing_auth(tmp_path, cert, key_path, ca.chain, ca.root_cert)
        key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else keys.generate_private_key(kind)
        cert = mock_signer_certificate(ca, key.public_key(), name="Mock CMP RA (%s)" % kind)
        return signing_auth(tmp_path, cert, key, ca.chain, ca.root_cert)

    return make


@pytest.fixture
def credential(ca, device_key):
    """The device's current domain credential, issued by the test CA: it signs kur and rr."""
    certificate = tp_x509.issue_certificate(
        ca.issuing_cert, ca.issuing_key, device_key.public_key(), SUBJECT, profiles.DOMAIN_CREDENTIAL
    )
    return SignatureCredential(device_key, certificate, ca.chain)


def assert_signed_both_ways(recorder, request_oid, response_oid):
    """Every request is signed with request_oid, every response with response_oid (no MAC anywhere)."""
    assert recorder.exchanges
    for request, response in recorder.exchanges:
        assert request.protection_alg == request_oid
        assert response.protection_alg == response_oid
        assert response.protection is not None


def kup_certificate(ca, credential, new_key):
    """The certificate the mock returns for a kur: for new_key, with the serial number of the credential.

    OpenSSL 3.0's mock accepts a kur only if its oldCertID names the issuer and serial number of its own
    -rsp_cert (later versions compare with -ref_cert), so the new certificate keeps the old serial.
    """
    issued = tp_x509.issue_certificate(
        ca.issuing_cert, ca.issuing_key, new_key.public_key(), SUBJECT, profiles.DOMAIN_CREDENTIAL
    )
    builder = x509.CertificateBuilder(
        issuer_name=issued.issuer,
        subject_name=issued.subject,
        public_key=issued.public_key(),
        serial_number=credential.certificate.serial_number,
        not_valid_before=tp_x509.not_before(issued),
        not_valid_after=tp_x509.not_after(issued),
        extensions=list(issued.extensions),
    )
    return builder.sign(ca.issuing_key, keys.hash_for(ca.issuing_key))


@pytest.mark.parametrize("signer", list(SIGNER_ALGORITHMS))
def test_key_update_signed_both_ways(start_mock, mock_signer, credential, ca, signer):
    """kur signed with the current credential; the mock verifies it against -srv_trusted and answers with
    a kup (and pkiconf) signed by its -srv_cert key, which the client verifies against the root."""
    new_key = keys.generate_private_key("ecdsa-p256")
    mock = start_mock(rsp_cert=kup_certificate(ca, credential, new_key), auth=mock_signer(signer))
    recorder = Recorder()
    client = CmpClient(mock.url, recorder)
    enrollment = skip_if_mock_cannot_sign(mock, signer, lambda: client.update_key(new_key, credential, [ca.root_cert]))
    assert enrollment.certificate == mock.rsp_cert
    assert keys.same_public_key(enrollment.certificate.public_key(), new_key)
    assert enrollment.chain == [ca.issuing_cert, ca.root_cert]
    assert [response.body_type for _request, response in recorder.exchanges] == ["kup", "pkiconf"]
    assert_signed_both_ways(recorder, "1.2.840.10045.4.3.2", SIGNER_ALGORITHMS[signer])
    assert mock.requests() == 2


@pytest.mark.parametrize("signer", list(SIGNER_ALGORITHMS))
def test_revocation_signed_both_ways(start_mock, mock_signer, credential, ca, signer):
    """rr for the current credential, signed with it; the mock accepts (it revokes only its -rsp_cert,
    so that is the credential) and answers with an rp signed by its -srv_cert key."""
    mock = start_mock(rsp_cert=credential.certificate, auth=mock_signer(signer))
    recorder = Recorder()
    client = CmpClient(mock.url, recorder)
    certificate = credential.certificate
    skip_if_mock_cannot_sign(mock, signer, lambda: client.revoke(certificate, credential, [ca.root_cert], "superseded"))
    assert [response.body_type for _request, response in recorder.exchanges] == ["rp"]
    assert_signed_both_ways(recorder, "1.2.840.10045.4.3.2", SIGNER_ALGORITHMS[signer])
    assert mock.requests() == 1


def test_key_update_with_rsa_credential(start_mock, mock_signer, ca):
    """An RSA current credential signs the kur with sha256WithRSAEncryption; the mock accepts it."""
    old_key = keys.generate_private_key("rsa-2048")
    old_cert = tp_x509.issue_certificate(
        ca.issuing_cert, ca.issuing_key, old_key.public_key(), SUBJECT, profiles.DOMAIN_CREDENTIAL
    )
    new_key = keys.generate_private_key("rsa-2048")
    credential = SignatureCredential(old_key, old_cert, ca.chain)
    mock = start_mock(rsp_cert=kup_certificate(ca, credential, new_key), auth=mock_signer("ecdsa-p256"))
    recorder = Recorder()
    enrollment = CmpClient(mock.url, recorder).update_key(new_key, credential, [ca.root_cert])
    assert enrollment.certificate == mock.rsp_cert
    assert_signed_both_ways(recorder, "1.2.840.113549.1.1.11", "1.2.840.10045.4.3.2")


def impostor_auth(tmp_path, ca):
    """A mock signing with a CA chain of the same names as ca but other keys: the client does not trust it."""
    impostor = tp_x509.CaChain.create("mock", "ecdsa-p256")
    assert impostor.root_cert.subject == ca.root_cert.subject
    return signing_auth(tmp_path, impostor.issuing_cert, impostor.issuing_key, [impostor.root_cert], ca.root_cert)


@pytest.mark.parametrize("operation", ["kur", "rr"])
def test_response_signed_by_untrusted_key(start_mock, tmp_path, credential, ca, operation):
    """The mock accepts the client's signed request, but signs its answer with a CA the client does not
    trust (same names as the domain's CA, other keys): CmpFailure signerNotTrusted, and no certConf."""
    new_key = keys.generate_private_key("ecdsa-p256")
    rsp_cert = kup_certificate(ca, credential, new_key) if operation == "kur" else credential.certificate
    mock = start_mock(rsp_cert=rsp_cert, auth=impostor_auth(tmp_path, ca))
    client = CmpClient(mock.url, urllib_transport)
    with pytest.raises(CmpFailure) as info:
        if operation == "kur":
            client.update_key(new_key, credential, [ca.root_cert])
        else:
            client.revoke(credential.certificate, credential, [ca.root_cert])
    assert info.value.fail_info == ("signerNotTrusted",)
    assert info.value.text.startswith("the response's protection does not verify: the response signer is not trusted: ")
    assert "mock Root CA" in info.value.text
    assert mock.requests() == 1


def test_response_signed_by_device_certificate(start_mock, tmp_path, credential, ca):
    """A response signer that chains to the trusted root but is neither a CA nor a CMP RA (another
    device's credential) is refused too."""
    key = keys.generate_private_key("ecdsa-p256")
    cert = mock_signer_certificate(ca, key.public_key(), name="Another Device", cmc_ra=False)
    new_key = keys.generate_private_key("ecdsa-p256")
    auth = signing_auth(tmp_path, cert, key, ca.chain, ca.root_cert)
    mock = start_mock(rsp_cert=kup_certificate(ca, credential, new_key), auth=auth)
    with pytest.raises(CmpFailure) as info:
        CmpClient(mock.url, urllib_transport).update_key(new_key, credential, [ca.root_cert])
    assert info.value.fail_info == ("signerNotTrusted",)
    assert info.value.text == (
        "the response's protection does not verify: the response signer is neither a CA nor a CMP RA"
    )
    assert mock.requests() == 1


def test_mock_checks_the_request_signature(start_mock, tmp_path, credential, ca):
    """The mock really verifies the client's signature: trusting another root (-srv_trusted), it rejects
    the kur with a signed error, which the client reports as authenticated."""
    other = tp_x509.CaChain.create("other", "ecdsa-p256")
    new_key = keys.generate_private_key("ecdsa-p256")
    auth = signing_auth(tmp_path, ca.issuing_cert, ca.issuing_key, [ca.root_cert], other.root_cert)
    mock = start_mock(rsp_cert=kup_certificate(ca, credential, new_key), auth=auth)
    with pytest.raises(CmpFailure) as info:
        CmpClient(mock.url, urllib_transport).update_key(new_key, credential, [ca.root_cert])
    assert info.value.text == "the server rejected the request: no suitable sender cert"
    assert info.value.fail_info == ("badRequest",)
    assert "error validating protection" in mock.log()
    assert mock.requests() == 1
