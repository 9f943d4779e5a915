# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The core's CMP values as a strict RFC 9480 decoder reads them (issue 15)."""

from __future__ import annotations

import pytest
from pyasn1.codec.der import decoder, encoder
from pyasn1_alt_modules import rfc5480, rfc9480
from trustpoint_core import keys
from trustpoint_core.cmp_message import (
    ID_EC_PUBLIC_KEY,
    ID_IT_CERT_REQ_TEMPLATE,
    ID_REGCTRL_ALG_ID,
    ID_REGCTRL_RSA_KEY_LEN,
    cert_req_template_value,
    genp_body,
)
from trustpoint_core.x509 import common_name


def strictly(der, spec):
    """der decoded with spec and every open type (the map of RFC 9480's ASN.1) decoded too."""
    value, rest = decoder.decode(der, asn1Spec=spec, decodeOpenTypes=True)
    assert not rest
    return value


@pytest.mark.parametrize("key_types", [keys.KEY_TYPES, ("ecdsa-p256",), ("rsa-3072",)])
def test_cert_req_template_decodes_strictly(key_types):
    """Every keySpec control decodes with the type RFC 9480 gives its OID: an AlgorithmIdentifier naming the
    curve for EC keys (id-regCtrl-algId), an INTEGER key length for RSA (id-regCtrl-rsaKeyLen)."""
    value = cert_req_template_value(common_name("dev1"), key_types)
    content = strictly(value, rfc9480.CertReqTemplateValue())
    curves, rsa_lengths = [], []
    for control in content["keySpec"]:
        oid = str(control["type"])
        if oid == ID_REGCTRL_ALG_ID:
            algorithm = control["value"]
            assert str(algorithm["algorithm"]) == ID_EC_PUBLIC_KEY
            # The open-type map of RFC 5480 decodes the parameters as ECParameters already.
            curve = algorithm["parameters"]
            assert isinstance(curve, rfc5480.ECParameters), type(curve)
            curves.append(str(curve["namedCurve"]))
        else:
            assert oid == ID_REGCTRL_RSA_KEY_LEN
            rsa_lengths.append(int(control["value"]))
    expected_curves = {"ecdsa-p256": "1.2.840.10045.3.1.7", "ecdsa-p384": "1.3.132.0.34"}
    assert curves == [expected_curves[k] for k in key_types if k in expected_curves]
    assert rsa_lengths == [int(k[4:]) for k in key_types if k.startswith("rsa-")]


def test_cert_req_template_inside_a_genp_decodes_strictly():
    """The whole genp body, its infoValue and the controls in it decode with the open-type maps."""
    _type, content = genp_body([(ID_IT_CERT_REQ_TEMPLATE, cert_req_template_value(None, keys.KEY_TYPES))])
    body = rfc9480.PKIBody()
    body["genp"] = content
    decoded = strictly(encoder.encode(body), rfc9480.PKIBody())
    [itav] = decoded["genp"]
    assert len(itav["infoValue"]["keySpec"]) == len(keys.KEY_TYPES)
