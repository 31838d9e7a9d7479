#!/usr/bin/env python3
"""Drives a running mqtt-tokend REST shim with Alibaba Cloud's official Python SDKs.

* V3 (ACS3-HMAC-SHA256): alibabacloud-onsmqtt20200420 over alibabacloud-tea-openapi.
* V1 (HMAC-SHA1): aliyun-python-sdk-onsmqtt over aliyun-python-sdk-core (no List action).

Only the endpoint (and protocol http) differ from talking to Alibaba Cloud. Configuration
comes from the environment (tests/sdk_compat.rs sets it):

  MQTT_TOKEND_ENDPOINT         host:port of the REST shim
  MQTT_TOKEND_AK_ID / _SECRET  an access key allowed on MQTT_TOKEND_INSTANCE only
  MQTT_TOKEND_INSTANCE         an instance the key may use
  MQTT_TOKEND_OTHER_INSTANCE   an instance the key may not use
  MQTT_TOKEND_IP_LIMITED_ENDPOINT  (optional) a server with a small per-IP limit

The server must run with the documented RevokeToken limit (5/s) for the rate-limit checks.
Prints one line per check and exits non-zero if any check failed.
"""

import os
import sys
import time
import uuid

failures = []


def check(name, fn):
    try:
        fn()
        print(f"PASS {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


ENDPOINT = os.environ["MQTT_TOKEND_ENDPOINT"]
AK_ID = os.environ["MQTT_TOKEND_AK_ID"]
AK_SECRET = os.environ["MQTT_TOKEND_AK_SECRET"]
INSTANCE = os.environ["MQTT_TOKEND_INSTANCE"]
OTHER = os.environ["MQTT_TOKEND_OTHER_INSTANCE"]
IP_LIMITED = os.environ.get("MQTT_TOKEND_IP_LIMITED_ENDPOINT", "")


def expire_ms(seconds=3600):
    return int(time.time() * 1000) + seconds * 1000


# ---------------------------------------------------------------- V3: the current SDK
from alibabacloud_onsmqtt20200420 import models as v3m  # noqa: E402
from alibabacloud_onsmqtt20200420.client import Client as V3Client  # noqa: E402
from alibabacloud_tea_openapi import models as openapi_models  # noqa: E402


def v3_client(endpoint=ENDPOINT, secret=AK_SECRET, key_id=AK_ID):
    return V3Client(
        openapi_models.Config(
            access_key_id=key_id,
            access_key_secret=secret,
            endpoint=endpoint,
            protocol="http",
        )
    )


def v3_code(fn):
    """Runs fn, expecting an SDK exception; returns the error code it carries."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        inner = getattr(e, "inner_exception", None) or e
        code = getattr(inner, "code", None)
        if code is None:
            raise
        return code
    raise AssertionError("call succeeded, an error was expected")


def v3_suite():
    c = v3_client()
    group = "GID_sdkv3"
    client_id = f"{group}@@@dev-{uuid.uuid4().hex[:8]}"
    state = {}

    def apply():
        r = c.apply_token(v3m.ApplyTokenRequest(
            actions="R,W", expire_time=expire_ms(), instance_id=INSTANCE,
            resources="sdk/v3/+,sdk/v3/#"))
        expect(r.status_code == 200, r.status_code)
        expect(r.body.token and r.body.request_id, r.body)
        expect(r.headers.get("x-acs-request-id") == r.body.request_id, r.headers)
        state["token"] = r.body.token

    def query():
        r = c.query_token(v3m.QueryTokenRequest(token=state["token"], instance_id=INSTANCE))
        expect(r.body.token_status is True, r.body)

    def revoke():
        r = c.revoke_token(v3m.RevokeTokenRequest(token=state["token"], instance_id=INSTANCE))
        expect(r.body.request_id, r.body)
        q = c.query_token(v3m.QueryTokenRequest(token=state["token"], instance_id=INSTANCE))
        expect(q.body.token_status is False, q.body)

    def register():
        r = c.register_device_credential(v3m.RegisterDeviceCredentialRequest(
            client_id=client_id, instance_id=INSTANCE))
        d = r.body.device_credential
        expect(d.client_id == client_id and d.instance_id == INSTANCE, d)
        expect(d.device_access_key_id.startswith("DC.") and d.device_access_key_secret, d)
        expect(isinstance(d.create_time, int) and d.update_time >= d.create_time, d)
        state["cred"] = d

    def get():
        r = c.get_device_credential(v3m.GetDeviceCredentialRequest(
            client_id=client_id, instance_id=INSTANCE))
        d = r.body.device_credential
        expect(d.device_access_key_id == state["cred"].device_access_key_id, d)

    def refresh():
        r = c.refresh_device_credential(v3m.RefreshDeviceCredentialRequest(
            client_id=client_id, instance_id=INSTANCE))
        d = r.body.device_credential
        expect(d.device_access_key_secret != state["cred"].device_access_key_secret, d)

    def list_ids():
        r = c.list_device_credential_client_id(v3m.ListDeviceCredentialClientIdRequest(
            group_id=group, instance_id=INSTANCE, page_no="1", page_size="10"))
        page = r.body.device_credential_client_id_list
        expect(client_id in page.client_id_list, page)
        expect(page.total == "1" and page.page_no == "1" and page.page_size == "10", page)

    def unregister():
        c.un_register_device_credential(v3m.UnRegisterDeviceCredentialRequest(
            client_id=client_id, instance_id=INSTANCE))
        code = v3_code(lambda: c.get_device_credential(v3m.GetDeviceCredentialRequest(
            client_id=client_id, instance_id=INSTANCE)))
        expect(code == "DeviceCredentialNotFound", code)

    for name, fn in [("ApplyToken", apply), ("QueryToken", query), ("RevokeToken", revoke),
                     ("RegisterDeviceCredential", register), ("GetDeviceCredential", get),
                     ("RefreshDeviceCredential", refresh),
                     ("ListDeviceCredentialClientId", list_ids),
                     ("UnRegisterDeviceCredential", unregister)]:
        check(f"v3 {name}", fn)


def v3_errors():
    c = v3_client()

    def bad_actions():
        code = v3_code(lambda: c.apply_token(v3m.ApplyTokenRequest(
            actions="X", expire_time=expire_ms(), instance_id=INSTANCE, resources="a/b")))
        expect(code == "InvalidParameter.Actions", code)

    def bad_expire():
        code = v3_code(lambda: c.apply_token(v3m.ApplyTokenRequest(
            actions="R", expire_time=expire_ms(-10), instance_id=INSTANCE, resources="a/b")))
        expect(code == "InvalidParameter.ExpireTime", code)

    def bad_client_id():
        code = v3_code(lambda: c.register_device_credential(v3m.RegisterDeviceCredentialRequest(
            client_id="no-group", instance_id=INSTANCE)))
        expect(code == "InvalidParameter.ClientId", code)

    def wrong_secret():
        bad = v3_client(secret=AK_SECRET + "x")
        code = v3_code(lambda: bad.query_token(v3m.QueryTokenRequest(
            token="t", instance_id=INSTANCE)))
        expect(code == "SignatureDoesNotMatch", code)

    def unknown_key():
        bad = v3_client(key_id="LTAInotakey")
        code = v3_code(lambda: bad.query_token(v3m.QueryTokenRequest(
            token="t", instance_id=INSTANCE)))
        expect(code == "InvalidAccessKeyId.NotFound", code)

    def other_instance():
        code = v3_code(lambda: c.apply_token(v3m.ApplyTokenRequest(
            actions="R", expire_time=expire_ms(), instance_id=OTHER, resources="a/b")))
        expect(code == "InstancePermissionCheckFailed", code)

    def rate_limit():
        codes = set()
        for _ in range(12):
            try:
                c.revoke_token(v3m.RevokeTokenRequest(token="x.y.z", instance_id=INSTANCE))
            except Exception as e:  # noqa: BLE001
                inner = getattr(e, "inner_exception", None) or e
                codes.add(getattr(inner, "code", repr(e)))
        expect("RevokeTokenOverFlow" in codes, codes)

    for name, fn in [("bad Actions", bad_actions), ("bad ExpireTime", bad_expire),
                     ("bad ClientId", bad_client_id), ("wrong secret", wrong_secret),
                     ("unknown key", unknown_key), ("other instance", other_instance),
                     ("rate limit", rate_limit)]:
        check(f"v3 error: {name}", fn)


# ---------------------------------------------------------------- V1: the legacy SDK
from aliyunsdkcore.client import AcsClient  # noqa: E402
from aliyunsdkcore.acs_exception.exceptions import ServerException  # noqa: E402
from aliyunsdkonsmqtt.request.v20200420 import (  # noqa: E402
    ApplyTokenRequest, QueryTokenRequest, RevokeTokenRequest,
    RegisterDeviceCredentialRequest, GetDeviceCredentialRequest,
    RefreshDeviceCredentialRequest, UnRegisterDeviceCredentialRequest)
import json  # noqa: E402


def v1_call(request, endpoint=ENDPOINT, secret=AK_SECRET, key_id=AK_ID):
    client = AcsClient(key_id, secret, "cn-hangzhou", auto_retry=False)
    request.set_endpoint(endpoint)
    request.set_protocol_type("http")
    return json.loads(client.do_action_with_exception(request))


def v1_code(request, **kw):
    try:
        v1_call(request, **kw)
    except ServerException as e:
        return e.get_error_code()
    raise AssertionError("call succeeded, an error was expected")


def v1_req(cls, **params):
    r = cls()
    for k, v in params.items():
        getattr(r, f"set_{k}")(v)
    return r


def v1_suite():
    client_id = f"GID_sdkv1@@@dev-{uuid.uuid4().hex[:8]}"
    state = {}

    def apply():
        body = v1_call(v1_req(ApplyTokenRequest.ApplyTokenRequest, Actions="R",
                              ExpireTime=expire_ms(), InstanceId=INSTANCE, Resources="sdk/v1/a"))
        expect(body["Token"] and body["RequestId"], body)
        state["token"] = body["Token"]

    def query():
        body = v1_call(v1_req(QueryTokenRequest.QueryTokenRequest, Token=state["token"],
                              InstanceId=INSTANCE))
        expect(body["TokenStatus"] is True, body)

    def revoke():
        v1_call(v1_req(RevokeTokenRequest.RevokeTokenRequest, Token=state["token"],
                       InstanceId=INSTANCE))
        body = v1_call(v1_req(QueryTokenRequest.QueryTokenRequest, Token=state["token"],
                              InstanceId=INSTANCE))
        expect(body["TokenStatus"] is False, body)

    def register():
        body = v1_call(v1_req(RegisterDeviceCredentialRequest.RegisterDeviceCredentialRequest,
                              ClientId=client_id, InstanceId=INSTANCE))
        d = body["DeviceCredential"]
        expect(d["ClientId"] == client_id and d["DeviceAccessKeyId"].startswith("DC."), d)
        state["cred"] = d

    def get():
        body = v1_call(v1_req(GetDeviceCredentialRequest.GetDeviceCredentialRequest,
                              ClientId=client_id, InstanceId=INSTANCE))
        expect(body["DeviceCredential"]["DeviceAccessKeyId"]
               == state["cred"]["DeviceAccessKeyId"], body)

    def refresh():
        body = v1_call(v1_req(RefreshDeviceCredentialRequest.RefreshDeviceCredentialRequest,
                              ClientId=client_id, InstanceId=INSTANCE))
        expect(body["DeviceCredential"]["DeviceAccessKeySecret"]
               != state["cred"]["DeviceAccessKeySecret"], body)

    def unregister():
        v1_call(v1_req(UnRegisterDeviceCredentialRequest.UnRegisterDeviceCredentialRequest,
                       ClientId=client_id, InstanceId=INSTANCE))
        code = v1_code(v1_req(GetDeviceCredentialRequest.GetDeviceCredentialRequest,
                              ClientId=client_id, InstanceId=INSTANCE))
        expect(code == "DeviceCredentialNotFound", code)

    for name, fn in [("ApplyToken", apply), ("QueryToken", query), ("RevokeToken", revoke),
                     ("RegisterDeviceCredential", register), ("GetDeviceCredential", get),
                     ("RefreshDeviceCredential", refresh),
                     ("UnRegisterDeviceCredential", unregister)]:
        check(f"v1 {name}", fn)


def v1_errors():
    def query(**kw):
        return v1_req(QueryTokenRequest.QueryTokenRequest, Token="t", InstanceId=kw.get(
            "instance", INSTANCE))

    def bad_resources():
        code = v1_code(v1_req(ApplyTokenRequest.ApplyTokenRequest, Actions="R",
                              ExpireTime=expire_ms(), InstanceId=INSTANCE, Resources="a/#/b"))
        expect(code == "InvalidParameter.Resources", code)

    def wrong_secret():
        # The SDK compares our "server string to sign" with its own and, when equal,
        # reports the precise cause.
        code = v1_code(query(), secret=AK_SECRET + "x")
        expect(code == "InvalidAccessKeySecret", code)

    def unknown_key():
        code = v1_code(query(), key_id="LTAInotakey")
        expect(code == "InvalidAccessKeyId.NotFound", code)

    def other_instance():
        code = v1_code(query(instance=OTHER))
        expect(code == "InstancePermissionCheckFailed", code)

    def rate_limit():
        codes = set()
        for _ in range(12):
            try:
                v1_call(v1_req(RevokeTokenRequest.RevokeTokenRequest, Token="x.y.z",
                               InstanceId=INSTANCE))
            except ServerException as e:
                codes.add(e.get_error_code())
        expect("RevokeTokenOverFlow" in codes, codes)

    for name, fn in [("bad Resources", bad_resources), ("wrong secret", wrong_secret),
                     ("unknown key", unknown_key), ("other instance", other_instance),
                     ("rate limit", rate_limit)]:
        check(f"v1 error: {name}", fn)


def ip_limit():
    """Throttling.User from the per-source-IP limit, through both SDKs."""
    c = v3_client(endpoint=IP_LIMITED)
    v3_codes, v1_codes = set(), set()
    for _ in range(12):
        try:
            c.query_token(v3m.QueryTokenRequest(token="t", instance_id=INSTANCE))
        except Exception as e:  # noqa: BLE001
            inner = getattr(e, "inner_exception", None) or e
            v3_codes.add(getattr(inner, "code", repr(e)))
    expect("Throttling.User" in v3_codes, v3_codes)
    for _ in range(12):
        try:
            v1_call(v1_req(QueryTokenRequest.QueryTokenRequest, Token="t", InstanceId=INSTANCE),
                    endpoint=IP_LIMITED)
        except ServerException as e:
            v1_codes.add(e.get_error_code())
    expect("Throttling.User" in v1_codes, v1_codes)


def main():
    v3_suite()
    v1_suite()
    v3_errors()
    time.sleep(1.5)  # let the RevokeToken bucket refill between the two rate-limit checks
    v1_errors()
    if IP_LIMITED:
        check("per-IP limit (both SDKs)", ip_limit)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
