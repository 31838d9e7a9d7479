//! The eight actions: Alibaba parameter names in, core call, Alibaba response fields out.
//! Missing business parameters reach the core as "" and come back as
//! `InvalidParameter.<Name>`, as Alibaba reports them.

use super::envelope::{RestError, Value};
use crate::core::{Actions, Caller, Core, DeviceCredential, Error, Field, TokenRequest};

/// Runs `action` for `caller`; returns the response fields after `RequestId`.
pub(crate) async fn dispatch(
    core: &Core,
    caller: &Caller,
    action: &str,
    p: &super::params::Params,
) -> Result<Vec<(&'static str, Value)>, RestError> {
    let instance_id = p.get_or_empty("InstanceId");
    match action {
        "ApplyToken" => {
            let actions = Actions::parse_alibaba(p.get_or_empty("Actions"))?;
            let expire_time = match p.get_or_empty("ExpireTime").trim() {
                "" => Err("is required (milliseconds since the Unix epoch)".to_owned()),
                v => v.parse::<i64>().map_err(|_| {
                    format!("{v:?} is not an integer: it must be milliseconds since the Unix epoch")
                }),
            }
            .map_err(|reason| Error::invalid(Field::ExpireTime, reason))?;
            let resources = match p.get_or_empty("Resources") {
                "" => Vec::new(),
                list => list.split(',').map(str::to_owned).collect(),
            };
            let applied = core
                .apply_token(
                    caller,
                    TokenRequest {
                        instance_id: instance_id.to_owned(),
                        actions,
                        resources,
                        expire_time,
                    },
                )
                .await?;
            // `TokenHandle` is ours, not Alibaba's: the official SDKs read only the fields they
            // know, and a REST-only user needs it to list and revoke the token later.
            Ok(vec![
                ("Token", Value::Str(applied.token)),
                ("TokenHandle", Value::Str(applied.handle)),
            ])
        }
        "QueryToken" => {
            let valid = core.query_token(caller, instance_id, p.get_or_empty("Token"))?;
            Ok(vec![("TokenStatus", Value::Bool(valid))])
        }
        "RevokeToken" => {
            core.revoke_token(caller, instance_id, p.get_or_empty("Token"))
                .await?;
            Ok(Vec::new())
        }
        "RegisterDeviceCredential" => {
            let c = core
                .register_device(caller, instance_id, p.get_or_empty("ClientId"))
                .await?;
            Ok(credential(c))
        }
        "GetDeviceCredential" => {
            let c = core.get_device(caller, instance_id, p.get_or_empty("ClientId"))?;
            Ok(credential(c))
        }
        "RefreshDeviceCredential" => {
            let c = core
                .refresh_device(caller, instance_id, p.get_or_empty("ClientId"))
                .await?;
            Ok(credential(c))
        }
        "UnRegisterDeviceCredential" => {
            core.unregister_device(caller, instance_id, p.get_or_empty("ClientId"))
                .await?;
            Ok(Vec::new())
        }
        "ListDeviceCredentialClientId" => {
            let page_no = optional_u32(p.get("PageNo"), Field::PageNo)?.unwrap_or(1);
            let page_size = optional_u32(p.get("PageSize"), Field::PageSize)?.unwrap_or(0);
            let page = core.list_devices(
                caller,
                instance_id,
                p.get_or_empty("GroupId"),
                page_no,
                page_size,
                p.get_or_empty("NextToken"),
            )?;
            Ok(vec![(
                "DeviceCredentialClientIdList",
                Value::Obj(vec![
                    (
                        "ClientIdList",
                        Value::List(page.client_ids.into_iter().map(Value::Str).collect()),
                    ),
                    ("NextToken", Value::Str(page.next_token)),
                    // Strings, as in the SDK's model and the API metadata.
                    ("PageNo", Value::Str(page.page_no.to_string())),
                    ("PageSize", Value::Str(page.page_size.to_string())),
                    ("Total", Value::Str(page.total.to_string())),
                ]),
            )])
        }
        _ => Err(RestError::ApiNotSupport),
    }
}

/// An absent or empty value is `None`; anything but a non-negative integer is
/// `InvalidParameter.<field>`.
fn optional_u32(value: Option<&str>, field: Field) -> Result<Option<u32>, Error> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u32>()
            .map(Some)
            .map_err(|_| Error::invalid(field, "must be a positive integer")),
    }
}

fn credential(c: DeviceCredential) -> Vec<(&'static str, Value)> {
    vec![(
        "DeviceCredential",
        Value::Obj(vec![
            ("ClientId", Value::Str(c.client_id)),
            ("DeviceAccessKeyId", Value::Str(c.device_access_key_id)),
            (
                "DeviceAccessKeySecret",
                Value::Str(c.device_access_key_secret),
            ),
            ("InstanceId", Value::Str(c.instance_id)),
            ("CreateTime", Value::Int(c.create_time)),
            ("UpdateTime", Value::Int(c.update_time)),
        ]),
    )]
}
