# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two server instances on one PostgreSQL database, as docs/server.md describes for a load balancer.

Every test runs twice: against two local processes, and against two hosts deployed by the
trustpoint_server role (role_hosts.py: a systemd container and one without a service manager).

A throwaway PostgreSQL cluster (postgres_cluster.py) holds the database; `trustpoint-server init
--database-url postgresql+psycopg://...` creates the schema, and two `trustpoint-server run` processes
with their own data directories (the second a copy of the first's vault.key, admin token and TLS files)
serve it. Devices onboard with the real `openssl cmp` client and with curl (EST) against either
instance; what one instance wrote, the other serves.

Races between the instances are forced, not hoped for: the test holds a PostgreSQL lock that both
requests need, waits until both wait for it, then lets go. What SQLite's write lock (db.begin_write)
serialises for one instance must hold across instances too.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import role_hosts
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cmp_helpers import (
    DOMAIN_SUBJECT,
    PkiDomain,
    assert_cmp_ok,
    assert_rejected,
    cmp_url,
    crl_url_of,
    error_of,
    load_pem,
    new_key_file,
    openssl_verify,
    post_cmp,
    run_cmp,
    serial_hex,
)
from conftest import BIN, Server, free_port, http, openssl, require_binary
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from page_client import PageClient
from postgres_cluster import PostgresCluster
from trustpoint_core.cmp_protection import verify_mac
from trustpoint_server.storage import migrate
from trustpoint_server.storage.db import make_engine
from trustpoint_server.storage.models import Base

TABLES = {
    "alembic_version",
    "api_token",
    "certificate_authority",
    "cmp_transaction",
    "credential_download",
    "devid_registration",
    "device",
    "domain",
    "issued_certificate",
    "operator",
    "owner_credential",
    "owner_reference",
    "readiness_probe",
    "tls_bundle_generation",
    "truststore",
}
# What the second instance takes from the first's data directory: the same vault key (it decrypts the
# CA keys and device secrets in the database), the admin token and the same TLS certificate.
SHARED_FILES = ("vault.key", "admin-token", "tls-ca.pem", "tls-ca-key.vault", "tls-cert.pem", "tls-key.pem")


def start_processes(postgres, tmp_path_factory):
    """(A, B): two `trustpoint-server run` processes on the one database."""
    dir_a = tmp_path_factory.mktemp("instance-a")
    result = subprocess.run(
        [str(BIN / "trustpoint-server"), "init", "--data-dir", str(dir_a), "--database-url", postgres.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    dir_b = tmp_path_factory.mktemp("instance-b")
    for name in SHARED_FILES:
        shutil.copy2(str(dir_a / name), str(dir_b / name))
    started = []
    try:
        # Server runs `init` (again for A: it must change nothing) without options: the environment
        # names the database for it; `run` gets --database-url.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TRUSTPOINT_DATABASE_URL", postgres.url)
            for data_dir in (dir_a, dir_b):
                started.append(Server(data_dir, free_port(), extra_args=("--database-url", postgres.url)))
    except BaseException:
        for server in started:
            server.stop()
        raise
    return tuple(started)


def stop_cluster(cluster):
    cluster.stop()
    assert cluster.processes() == [], "PostgreSQL processes outlived the test"
    assert not cluster.root.exists()


@pytest.fixture(scope="module", params=["processes", "role"])
def deployment(request, tmp_path_factory):
    """(cluster, (A, B)): two instances on one PostgreSQL database, either two local processes or, through
    the trustpoint_server role, two hosts (a systemd one and one without a service manager) whose second
    takes the first's vault key, TLS CA and admin token (trustpoint_server_primary_host)."""
    if request.param == "processes":
        cluster = PostgresCluster()
        try:
            instances = start_processes(cluster, tmp_path_factory)
            try:
                yield cluster, instances
            finally:
                for server in instances:
                    server.stop()
        finally:
            stop_cluster(cluster)
        return
    role_hosts.require_podman()
    hosts = role_hosts.PodmanHosts(tmp_path_factory.mktemp("role-hosts"), "pg1:41:systemd", "pg2:42:plain")
    try:
        # The hosts reach the database over the bridge; the tests query it over loopback.
        cluster = PostgresCluster(listen=("127.0.0.1", role_hosts.GATEWAY), allow=(role_hosts.SUBNET + ".0/24",))
        try:
            deployed = hosts.deploy(
                {"pg2": {"trustpoint_server_primary_host": "pg1"}},
                trustpoint_server_database_url=cluster.url_at(role_hosts.GATEWAY),
            )
            yield cluster, (deployed["pg1"], deployed["pg2"])
        finally:
            stop_cluster(cluster)
    finally:
        hosts.down()


@pytest.fixture(scope="module")
def postgres(deployment):
    return deployment[0]


@pytest.fixture(scope="module")
def instances(deployment):
    """(A, B): two server instances on the one database."""
    return deployment[1]


@pytest.fixture
def domain(instances, workdir):
    """A fresh domain, created through instance A."""
    return PkiDomain(instances[0], workdir)


# --- helpers ---------------------------------------------------------------------------------------


def onboard(server, domain_name, device_id, secret, workdir, stem, *extra, implicit=False):
    """`openssl cmp -cmd ir` with the device's shared secret against server; (returncode, output, cert path)."""
    key = new_key_file(workdir / ("%s.key" % stem))
    cert = workdir / ("%s.pem" % stem)
    args = ["-cmd", "ir", "-server", cmp_url(server, domain_name, "initialization"), "-ref", device_id]
    args += ["-secret", "pass:" + secret, "-subject", DOMAIN_SUBJECT, "-newkey", key]
    args += ["-certout", cert, "-chainout", workdir / ("%s-chain.pem" % stem)]
    if implicit:
        args.append("-implicit_confirm")
    returncode, output = run_cmp(*args, *extra, cwd=workdir)
    return returncode, output, cert


def capture_ir(server, domain_name, device_id, secret, workdir, stem):
    """The DER of the ir `openssl cmp` would send, captured with -reqout and never sent (-rspin)."""
    (workdir / "no-response.der").write_bytes(b"not a response")
    key = new_key_file(workdir / ("%s.key" % stem))
    returncode, output = run_cmp(
        "-cmd", "ir", "-server", cmp_url(server, domain_name, "initialization"), "-ref", device_id,
        "-secret", "pass:" + secret, "-subject", DOMAIN_SUBJECT, "-newkey", key,
        "-certout", workdir / ("%s.pem" % stem), "-reqout", workdir / ("%s.der" % stem),
        "-rspin", workdir / "no-response.der", cwd=workdir,
    )  # fmt: skip
    assert returncode != 0, output
    return (workdir / ("%s.der" % stem)).read_bytes()


def issued_rows(postgres, device_id):
    """(serial, status) of every certificate the database holds for a device."""
    return postgres.query(
        "SELECT serial_number, status FROM issued_certificate WHERE device_id = %s ORDER BY id", (device_id,)
    )


def end_retry_window(postgres, device_id):
    """The window in which the device's used one-time secret (or password) still works is over."""
    with postgres.connect() as connection:
        connection.execute("UPDATE device SET secret_retry_until = '2000-01-01' WHERE id = %s", (device_id,))


def assert_same_everywhere(instances, device_id):
    """Both instances answer the same for the device; returns the record."""
    records = [server.device(device_id) for server in instances]
    assert records[0] == records[1], records
    return records[0]


def assert_credential_is(record, cert_path):
    cert = load_pem(cert_path)[0]
    assert record["status"] == "onboarded", record
    assert record["credential"]["serial_number"] == serial_hex(cert)
    assert record["credential"]["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert record["credential"]["status"] == "active"
    return cert


def est_enroll(server, domain_name, username, password, workdir, stem):
    """EST simpleenroll with HTTP Basic, by openssl (key, CSR) and curl, as the enroll module's openssl
    backend does it; (HTTP status, certificate path or the error body)."""
    key = new_key_file(workdir / ("%s.key" % stem))
    csr = workdir / ("%s.csr" % stem)
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=" + username, "-outform", "DER", "-out", str(csr))
    body = workdir / ("%s.csr.b64" % stem)
    body.write_bytes(base64.b64encode(csr.read_bytes()))
    answer = workdir / ("%s.p7.b64" % stem)
    result = subprocess.run(
        [
            require_binary("curl"), "-sS", "--max-time", "60", "--cacert", str(server.ca_file),
            "--user", "%s:%s" % (username, password), "--header", "Content-Type: application/pkcs10",
            "--data-binary", "@%s" % body, "--output", str(answer), "--write-out", "%{http_code}",
            "%s/.well-known/est/%s/simpleenroll" % (server.url, domain_name),
        ],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = int(result.stdout)
    if status != 200:
        return status, answer.read_text(errors="replace")
    der = workdir / ("%s.p7.der" % stem)
    der.write_bytes(base64.b64decode(answer.read_bytes()))
    cert = workdir / ("%s.pem" % stem)
    cert.write_text(openssl("pkcs7", "-inform", "DER", "-in", str(der), "-print_certs").stdout)
    return status, cert


def race(postgres, lock_statements, calls):
    """Run calls (functions without arguments) at once while lock_statements hold a lock they all
    need; let go once every call waits for it. Returns (their results, whether all waited)."""
    # The lock goes first (contexts exit right to left), then the pool waits for the calls.
    with ThreadPoolExecutor(len(calls)) as pool, postgres.holding(*lock_statements) as wait_for_waiters:
        futures = [pool.submit(call) for call in calls]
        all_waited = wait_for_waiters(len(calls))
    return [future.result() for future in futures], all_waited


# --- one database, two instances -----------------------------------------------------------------------


def test_init_creates_the_schema_in_postgresql(postgres, instances):
    """init --database-url made every table in PostgreSQL and the admin token there; no instance fell
    back to SQLite in its data directory; both accept the one admin token."""
    rows = postgres.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert {row[0] for row in rows} == TABLES
    # The migrations built exactly the models' schema on PostgreSQL too (the baseline has a PostgreSQL-only path).
    engine = make_engine(postgres.url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert migrate.current(connection) == migrate.head()
    finally:
        engine.dispose()
    assert postgres.query("SELECT name FROM api_token") == [("admin",)]
    for server in instances:
        assert server.data_file("trustpoint.db") is None
        status, body = server.api("GET", "/domains")
        assert status == 200, body
    # One TLS CA, one vault key: a client that trusts one instance trusts the other.
    for name in ("tls-ca.pem", "vault.key"):
        first, second = (server.data_file(name) for server in instances)
        assert first is not None and first == second, name


def test_what_a_writes_b_serves(instances, workdir):
    """A domain created through A is served by B with the same CA chain; a change through B shows on A."""
    a, b = instances
    created = a.create_domain(validity_days=30)
    status, seen = b.api("GET", "/domains/%s" % created["name"])
    assert status == 200, seen
    assert seen == a.api("GET", "/domains/%s" % created["name"])[1]
    assert seen["ca_chain"] == created["ca_chain"]
    assert created["name"] in [d["name"] for d in b.api("GET", "/domains")[1]]
    status, changed = b.api("PATCH", "/domains/%s" % created["name"], {"validity_days": 45})
    assert status == 200, changed
    assert a.api("GET", "/domains/%s" % created["name"])[1]["validity_days"] == 45
    # The name is taken for both.
    status, body = b.api("POST", "/domains", {"name": created["name"]})
    assert status == 409, body


def test_device_registered_on_a_onboards_on_b(postgres, instances, domain, workdir):
    """A device registered through A onboards with `openssl cmp` (ir, certConf) against B: the
    certificate verifies against the domain root, both instances show the same onboarded device and
    credential; within its retry window the secret onboards again through A (the answer may have been lost),
    after it A refuses it, and a deletion through B revokes the credential in A's CRL."""
    a, b = instances
    device, secret = a.create_device(domain.name)
    assert b.device(device["id"])["status"] == "pending"
    returncode, output, cert_path = onboard(b, domain.name, device["id"], secret, workdir, "dc")
    assert_cmp_ok(returncode, output)
    assert "sending CERTCONF" in output and "received PKICONF" in output, output
    result = openssl_verify(domain.root_path, cert_path, untrusted=workdir / "dc-chain.pem", purpose="sslclient")
    assert result.returncode == 0, result.stdout + result.stderr
    cert = assert_credential_is(assert_same_everywhere(instances, device["id"]), cert_path)
    assert issued_rows(postgres, device["id"]) == [(serial_hex(cert), "active")]

    # Used through B, unused since: A onboards the device again with it, and the first credential is superseded.
    returncode, output, again_path = onboard(a, domain.name, device["id"], secret, workdir, "again")
    assert_cmp_ok(returncode, output)
    cert = assert_credential_is(assert_same_everywhere(instances, device["id"]), again_path)
    assert [row[1] for row in issued_rows(postgres, device["id"])] == ["revoked", "active"]
    # After the window the secret is spent: A cannot verify a new request with it (nor protect its answer).
    end_retry_window(postgres, device["id"])
    returncode, output, _cert = onboard(a, domain.name, device["id"], secret, workdir, "late", "-unprotected_errors")
    assert_rejected(returncode, output, "badMessageCheck")
    assert assert_same_everywhere(instances, device["id"])["credential"]["serial_number"] == serial_hex(cert)

    # Deleted through B: A's CRL lists the certificate.
    status, body = b.api("DELETE", "/devices/%d" % device["id"])
    assert status == 204, body
    assert a.api("GET", "/devices/%d" % device["id"])[0] == 404
    path = "/crl/" + crl_url_of(cert).split("/crl/", 1)[1]
    status, _headers, der = http("GET", a.cmp_url + path)
    assert status == 200, der[:200]
    assert cert.serial_number in [entry.serial_number for entry in x509.load_der_x509_crl(der)]


def test_concurrent_onboarding_across_instances(postgres, instances, domain, workdir):
    """Ten devices, registered alternately through A and B, onboard at once with `openssl cmp`, each
    against the other instance, half with certConf and half implicitly confirmed: all succeed, every
    serial number and transaction ID is unique, and every device row holds its own active credential."""
    count = 10
    devices = [instances[i % 2].create_device(domain.name) for i in range(count)]

    def enroll(index):
        device, secret = devices[index]
        directory = workdir / ("device-%d" % index)
        directory.mkdir()
        server = instances[(index + 1) % 2]
        return onboard(server, domain.name, device["id"], secret, directory, "dc", implicit=index % 4 < 2)

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(enroll, range(count)))
    for returncode, output, _cert in results:
        assert_cmp_ok(returncode, output)
    certs = [
        assert_credential_is(assert_same_everywhere(instances, device["id"]), cert_path)
        for (device, _secret), (_rc, _out, cert_path) in zip(devices, results)
    ]
    serials = [cert.serial_number for cert in certs]
    assert len(set(serials)) == count

    ids = tuple(device["id"] for device, _secret in devices)
    rows = postgres.query(
        "SELECT d.id, d.status, d.secret_retry_until IS NOT NULL, d.onboarded_at IS NOT NULL,"
        " c.device_id, c.serial_number, c.status"
        " FROM device d JOIN issued_certificate c ON c.id = d.credential_id WHERE d.id = ANY(%s) ORDER BY d.id",
        (list(ids),),
    )
    assert [row[0] for row in rows] == sorted(ids)
    # Each secret is used: it works again only in its retry window (secret_retry_until set).
    for device_id, status, secret_used, onboarded_at, owner, serial, cert_status in rows:
        assert (status, secret_used, onboarded_at, owner, cert_status) == (
            "onboarded",
            True,
            True,
            device_id,
            "active",
        ), device_id
        assert int(serial, 16) in serials
    issued = postgres.query("SELECT count(*) FROM issued_certificate WHERE device_id = ANY(%s)", (list(ids),))
    assert issued == [(count,)]
    transactions = postgres.query(
        "SELECT transaction_id, state FROM cmp_transaction WHERE device_id = ANY(%s)", (list(ids),)
    )
    assert len(transactions) == count
    assert len({bytes(row[0]) for row in transactions}) == count
    assert {row[1] for row in transactions} == {"confirmed"}


def test_replayed_request_is_refused_by_the_other_instance(postgres, instances, domain, workdir):
    """An ir captured from `openssl cmp -reqout`, POSTed to A (ip) and then the same bytes to B:
    transactionIdInUse, protected with the device's secret, and no second certificate."""
    a, b = instances
    device, secret = b.create_device(domain.name)
    ir = capture_ir(a, domain.name, device["id"], secret, workdir, "ir")
    assert post_cmp(cmp_url(a, domain.name, "initialization"), ir).body_type == "ip"
    replay = post_cmp(cmp_url(b, domain.name, "initialization"), ir)
    fail_info, text = error_of(replay)
    assert fail_info == ("transactionIdInUse",), (fail_info, text)
    verify_mac(replay, secret.encode())
    assert [row[1] for row in issued_rows(postgres, device["id"])] == ["awaiting_confirmation"]
    assert assert_same_everywhere(instances, device["id"])["status"] == "pending"


def test_one_transaction_id_racing_on_both_instances(postgres, instances, domain, workdir):
    """The same captured ir reaches A and B at once, both past the check for a known transactionID:
    the unique constraint lets one through (ip) and the other gets transactionIdInUse; one certificate."""
    a, b = instances
    device, secret = a.create_device(domain.name)
    ir = capture_ir(a, domain.name, device["id"], secret, workdir, "ir")
    (first, second), all_waited = race(
        postgres,
        ["LOCK TABLE cmp_transaction IN EXCLUSIVE MODE"],
        [lambda server=server: post_cmp(cmp_url(server, domain.name, "initialization"), ir) for server in instances],
    )
    answers = sorted([first.body_type, second.body_type])
    assert answers == ["error", "ip"], (answers, all_waited, a.log()[-3000:], b.log()[-3000:])
    rejected = first if first.body_type == "error" else second
    assert error_of(rejected)[0] == ("transactionIdInUse",)
    assert len(issued_rows(postgres, device["id"])) == 1


def test_est_password_enrollment_on_b_for_a_device_registered_on_a(postgres, instances, domain, workdir):
    """EST simpleenroll with the one-time password against B for a device registered through A: the
    certificate verifies, both show the credential, and after the password's retry window A refuses it."""
    a, b = instances
    name = "est-" + uuid.uuid4().hex[:10]
    status, created = a.api(
        "POST", "/devices", {"name": name, "domain": domain.name, "onboarding_method": "est_password"}
    )
    assert status == 201, created
    status, cert_path = est_enroll(b, domain.name, name, created["password"], workdir, "est")
    assert status == 200, cert_path
    (workdir / "chain.pem").write_text(a.api("GET", "/domains/%s" % domain.name)[1]["ca_chain"])
    result = openssl_verify(domain.root_path, cert_path, untrusted=workdir / "chain.pem", purpose="sslclient")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_credential_is(assert_same_everywhere(instances, created["device"]["id"]), cert_path)
    end_retry_window(postgres, created["device"]["id"])
    status, body = est_enroll(a, domain.name, name, created["password"], workdir, "est-again")
    assert status == 401, body
    assert len(issued_rows(postgres, created["device"]["id"])) == 1


# --- what SQLite's write lock serialises must stay serialised across instances ----------------------------


def test_one_time_est_password_racing_on_both_instances(postgres, instances, domain, workdir):
    """The same one-time EST password reaches A and B at once. Both succeed (the second is the device sending
    again within the password's retry window), and exactly one certificate stays active, the device's credential:
    the second issuance supersedes the first only because begin_write() serialises writers on PostgreSQL as
    SQLite's BEGIN IMMEDIATE does (two writers at once would each see the other's certificate uncommitted)."""
    a, b = instances
    name = "est-" + uuid.uuid4().hex[:10]
    status, created = a.api(
        "POST", "/devices", {"name": name, "domain": domain.name, "onboarding_method": "est_password"}
    )
    assert status == 201, created
    password = created["password"]
    results, all_waited = race(
        postgres,
        ["LOCK TABLE issued_certificate IN EXCLUSIVE MODE"],
        [
            lambda server=server, stem=stem: est_enroll(server, domain.name, name, password, workdir, stem)
            for server, stem in ((a, "on-a"), (b, "on-b"))
        ],
    )
    statuses = sorted(status for status, _answer in results)
    issued = issued_rows(postgres, created["device"]["id"])
    active = [serial for serial, status in issued if status == "active"]
    assert (statuses, len(issued), len(active)) == ([200, 200], 2, 1), (
        "one password, %d certificates issued, %d active (HTTP %s; both requests waited: %s)"
        % (len(issued), len(active), statuses, all_waited)
    )
    credential = assert_same_everywhere(instances, created["device"]["id"])["credential"]
    assert credential["serial_number"] == active[0] and credential["status"] == "active"


def test_crl_numbers_stay_unique_across_instances(postgres, instances, domain):
    """A and B issue the CA's CRL at once (it has none yet). Each must get a CRL number of its own, or
    both the same CRL (RFC 5280 5.2.3: CRL numbers increase monotonically; two different CRLs never
    share one). crl.py reads crl_number again after begin_write(), which must serialise the writers."""
    [(ca_id,)] = postgres.query(
        "SELECT c.id FROM certificate_authority c JOIN domain d ON d.id = c.domain_id"
        " WHERE d.name = %s AND c.role = 'issuing'",
        (domain.name,),
    )
    results, all_waited = race(
        postgres,
        [("SELECT id FROM certificate_authority WHERE id = %s FOR UPDATE", (ca_id,))],
        [lambda server=server: http("GET", "%s/crl/%d" % (server.cmp_url, ca_id)) for server in instances],
    )
    crls = []
    for status, _headers, body in results:
        assert status == 200, body[:300]
        crls.append(x509.load_der_x509_crl(body))
    numbers = [crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for crl in crls]
    same_crl = crls[0].public_bytes(Encoding.DER) == crls[1].public_bytes(Encoding.DER)
    message = "two different CRLs with CRL number %d (both requests waited: %s)" % (numbers[0], all_waited)
    assert numbers[0] != numbers[1] or same_crl, message


def test_concurrent_creation_of_one_domain_name(postgres, instances):
    """POST /domains with one name to A and B at once: one 201, one 409 (pki.create_domain checks the
    name again after begin_write()), not an unhandled IntegrityError (500)."""
    name = "race-" + uuid.uuid4().hex[:10]
    results, all_waited = race(
        postgres,
        ["LOCK TABLE domain IN EXCLUSIVE MODE"],
        [lambda server=server: server.api("POST", "/domains", {"name": name}) for server in instances],
    )
    statuses = sorted(status for status, _body in results)
    assert statuses == [201, 409], (results, all_waited)
    assert postgres.query("SELECT count(*) FROM domain WHERE name = %s", (name,)) == [(1,)]


def test_an_operator_session_from_a_works_on_b_and_signing_out_on_b_ends_it_on_a(instances):
    """The session cookie's key derives from the shared vault key, its token lives in the shared database."""
    a, b = instances
    on_a = PageClient(a)
    status, _headers, _text = on_a.sign_in("admin", a.data_file("operator-password").decode().strip())
    assert status == 302
    on_b = PageClient(b)
    on_b.adopt_session(on_a)
    assert on_b.get("/ui/devices")[0] == 200
    assert on_b.post_form("/ui/sign-out", {}, form_page="/ui/devices")[0] == 302
    status, headers, _text = on_a.get("/ui/devices")
    assert status == 302 and "/ui/sign-in" in headers["Location"]


# --- the enrollment paths' plans (issue 16) --------------------------------------------------------------


def test_the_hot_paths_use_indexes_in_postgresql(tmp_path, monkeypatch):
    """Every statement of the enrollment paths (tests/hot_paths.py, in-process) finds its rows in the
    tables that grow with the fleet through an index in PostgreSQL too (tests/unit/test_query_plans.py: on
    SQLite).

    On small tables PostgreSQL's planner prefers a sequential scan, whatever the indexes: with
    enable_seqscan off it takes an index whenever one serves, so a Seq Scan left in the plan means none
    does. Runs once, on its own cluster (not the two deployments of the other tests)."""
    import psycopg
    from hot_paths import GROWING, make_app, run_hot_paths

    cluster = PostgresCluster()
    try:
        app = make_app(tmp_path / "data", cluster.url)
        engine = app.extensions["trustpoint"].engine
        try:
            seen = run_hot_paths(app, monkeypatch)
            scans = []
            raw = engine.raw_connection()
            try:
                # Client-side binding: EXPLAIN of the statement with its parameters in place.
                cursor = psycopg.ClientCursor(raw.driver_connection)
                cursor.execute("SET enable_seqscan = off")
                for name, statement, parameters in seen:
                    if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                        continue
                    cursor.execute("EXPLAIN " + statement, parameters)
                    for (line,) in cursor.fetchall():
                        if any("Seq Scan on %s " % table in line + " " for table in GROWING):
                            scans.append("%s: %s\n    %s" % (name, line.strip(), " ".join(statement.split())))
                raw.rollback()
            finally:
                raw.close()
            assert scans == [], "sequential scans on a hot path (add an index, migration + models):\n" + "\n".join(
                scans
            )
        finally:
            engine.dispose()
    finally:
        stop_cluster(cluster)


# --- the TLS client CA bundle's generation (issue 16) ------------------------------------------------------


def test_every_change_of_the_tls_bundle_moves_the_generation_in_postgresql(tmp_path):
    """The triggers (a plpgsql function, statement-level) move the generation on every change of the bundle, by
    the services or by SQL on another connection (another instance), cascades included; ServerContexts sees each
    at the next handshake (tests/tls_bundle_changes.py; tests/unit/test_tls_bundle.py: on SQLite)."""
    from hot_paths import make_app
    from tls_bundle_changes import run_bundle_changes
    from trustpoint_server.storage import triggers

    cluster = PostgresCluster()
    try:
        app = make_app(tmp_path / "data", cluster.url)
        engine = app.extensions["trustpoint"].engine
        try:
            rows = cluster.query("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname")
            assert [row[0] for row in rows] == triggers.trigger_names("postgresql")

            def other_connection_sql(statement, parameters=()):
                with cluster.connect() as connection:  # autocommit: committed when it returns
                    connection.execute(statement.replace("?", "%s"), parameters)

            seen = run_bundle_changes(app, other_connection_sql)
            assert len(seen) == 14, seen
        finally:
            engine.dispose()
    finally:
        stop_cluster(cluster)
