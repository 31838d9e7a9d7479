#!/usr/bin/env python3
"""The official V3 SDK over https against mqtt-tokend's REST shim with TLS (tests/tls.rs).

How to pass the server's CA: `Config(protocol="https", ca="<CA PEM file>")`; with mutual TLS
also `cert="<one PEM file holding the client certificate and its key>"`. Nothing else changes.

Environment:
  MQTT_TOKEND_ENDPOINT         host:port of the REST shim (https)
  MQTT_TOKEND_AK_ID / _SECRET  an access key allowed on MQTT_TOKEND_INSTANCE
  MQTT_TOKEND_INSTANCE         the instance
  MQTT_TOKEND_CA               the CA that signed the server certificate
  MQTT_TOKEND_OTHER_CA         a CA that did not
  MQTT_TOKEND_CLIENT_CERT      (mutual TLS) client certificate + key, one PEM file
Prints one line per check and "all passed", or exits non-zero.
"""

import os
import sys
import time

from alibabacloud_onsmqtt20200420 import models as v3m
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from darabonba.core import DaraCore

ENDPOINT = os.environ["MQTT_TOKEND_ENDPOINT"]
INSTANCE = os.environ["MQTT_TOKEND_INSTANCE"]
CLIENT_CERT = os.environ.get("MQTT_TOKEND_CLIENT_CERT")
failures = []


def client(ca, cert=CLIENT_CERT):
    return Client(
        openapi_models.Config(
            access_key_id=os.environ["MQTT_TOKEND_AK_ID"],
            access_key_secret=os.environ["MQTT_TOKEND_AK_SECRET"],
            endpoint=ENDPOINT,
            protocol="https",
            ca=ca,
            cert=cert,
        )
    )


def check(name, fn):
    # The SDK runtime keeps one connection pool per endpoint across clients: start each check
    # on a fresh one, so a refused set-up cannot ride on an earlier check's open connection.
    DaraCore._sessions.clear()
    try:
        fn()
        print(f"PASS {name}")
    except Exception as e:  # noqa: BLE001 - report every failure
        failures.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def apply_and_query(c):
    token = c.apply_token(
        v3m.ApplyTokenRequest(
            instance_id=INSTANCE,
            actions="R,W",
            resources="devices/#",
            expire_time=int(time.time() * 1000) + 3_600_000,
        )
    ).body.token
    assert token, "no token"
    valid = c.query_token(v3m.QueryTokenRequest(instance_id=INSTANCE, token=token)).body.token_status
    assert valid is True, f"QueryToken said {valid}"


def refused(c):
    try:
        apply_and_query(c)
    except Exception as e:  # noqa: BLE001 - the TLS failure surfaces as the SDK's error
        return str(e)
    raise AssertionError("the call succeeded")


check("https with the CA: ApplyToken + QueryToken", lambda: apply_and_query(client(os.environ["MQTT_TOKEND_CA"])))
check("https trusting another CA is refused", lambda: refused(client(os.environ["MQTT_TOKEND_OTHER_CA"])))
if CLIENT_CERT:
    check("mutual TLS without a client certificate is refused", lambda: refused(client(os.environ["MQTT_TOKEND_CA"], cert=None)))

if failures:
    print(f"{len(failures)} failed: {failures}")
    sys.exit(1)
print("all passed")
