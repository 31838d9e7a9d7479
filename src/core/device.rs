//! Device credentials ("one device, one secret"): RegisterDeviceCredential and its family.
//!
//! The device secret is derived from the keyring and the device access key id, so it is never
//! stored; Refresh issues a new key id (hence a new secret) and the old pair stops working at
//! once because the key index no longer points at it.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::revocation::Draft;
use super::{
    access_key::check_instance_id, keyring::random_bytes, now_ms, Caller, Core, Error, Field,
    Operation, Result, RevocationKind,
};
use crate::store::Op;

/// Longest client id Alibaba accepts.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Largest page ListDeviceCredentialClientId serves.
pub const MAX_PAGE_SIZE: u32 = 100;

/// A device credential as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// `GroupId@@@DeviceId`.
    pub client_id: String,
    /// The instance.
    pub instance_id: String,
    /// `DC.` + 22 URL-safe characters.
    pub device_access_key_id: String,
    /// `DC.` + 32 URL-safe characters.
    pub device_access_key_secret: String,
    /// Creation time, ms since the Unix epoch.
    pub create_time: i64,
    /// Last refresh (or creation) time, ms since the Unix epoch.
    pub update_time: i64,
}

/// A device credential as the service keeps it (the secret is derived, never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredDevice {
    /// The instance.
    pub instance_id: String,
    /// `GroupId@@@DeviceId`.
    pub client_id: String,
    /// The current device access key id.
    pub device_key_id: String,
    /// Creation time, ms since the Unix epoch.
    pub create_ms: i64,
    /// Last refresh (or creation) time, ms since the Unix epoch.
    pub update_ms: i64,
    /// Id of the keyring key its secret is derived from.
    pub keyring_id: u32,
}

/// One page of ListDeviceCredentialClientId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePage {
    /// Client ids on this page.
    pub client_ids: Vec<String>,
    /// Cursor for the next page; empty on the last page.
    pub next_token: String,
    /// The page number served.
    pub page_no: u32,
    /// The page size served.
    pub page_size: u32,
    /// Credentials in the group.
    pub total: u64,
}

fn valid_group_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a group id: `GID_` or `GID-` then letters, digits, `-` or `_`, 7 to 64 characters.
///
/// # Errors
/// `InvalidParameter.<field>`.
pub fn check_group_id(group_id: &str, field: Field) -> Result<()> {
    if !(group_id.starts_with("GID_") || group_id.starts_with("GID-")) {
        return Err(Error::invalid(
            field,
            "the group id must start with GID_ or GID-",
        ));
    }
    if !(7..=64).contains(&group_id.len()) {
        return Err(Error::invalid(
            field,
            "the group id must be 7 to 64 characters",
        ));
    }
    if !valid_group_chars(group_id) {
        return Err(Error::invalid(
            field,
            "the group id may contain only letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

/// Checks a client id: `GroupId@@@DeviceId`, at most 64 characters, the device id one or more
/// letters, digits, `-` or `_`. Returns the group id.
///
/// # Errors
/// `InvalidParameter.ClientId`.
pub fn check_client_id(client_id: &str) -> Result<&str> {
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(Error::invalid(
            Field::ClientId,
            format!("must be at most {MAX_CLIENT_ID_LEN} characters"),
        ));
    }
    let Some((group, device)) = client_id.split_once("@@@") else {
        return Err(Error::invalid(
            Field::ClientId,
            "must be GroupId@@@DeviceId",
        ));
    };
    check_group_id(group, Field::ClientId)?;
    if device.is_empty() || !valid_group_chars(device) {
        return Err(Error::invalid(
            Field::ClientId,
            "the device id must be one or more letters, digits, '-' or '_'",
        ));
    }
    Ok(group)
}

fn new_device_key_id() -> String {
    format!("DC.{}", URL_SAFE_NO_PAD.encode(random_bytes::<16>()))
}

impl Core {
    fn device_secret(&self, record: &RegisteredDevice) -> Result<String> {
        self.keyring
            .device_secret(record.keyring_id, &record.device_key_id)
            .ok_or_else(|| {
                Error::internal("device credential derived from a key missing from the keyring")
            })
    }

    fn credential(&self, record: RegisteredDevice) -> Result<DeviceCredential> {
        let secret = self.device_secret(&record)?;
        Ok(DeviceCredential {
            client_id: record.client_id,
            instance_id: record.instance_id,
            device_access_key_id: record.device_key_id,
            device_access_key_secret: secret,
            create_time: record.create_ms,
            update_time: record.update_ms,
        })
    }

    fn check_device_call(
        &self,
        caller: &Caller,
        instance_id: &str,
        client_id: &str,
        op: Operation,
    ) -> Result<()> {
        check_instance_id(instance_id)?;
        check_client_id(client_id)?;
        caller.check_instance(instance_id)?;
        self.limiter.check(caller.access_key_id(), op)
    }

    /// The live credential behind a device access key id, if any (broker checks).
    pub(crate) fn device_by_key(
        &self,
        device_key_id: &str,
    ) -> Result<Option<(RegisteredDevice, String)>> {
        let Some(record) = self.store.device_by_key(device_key_id)? else {
            return Ok(None);
        };
        let secret = self.device_secret(&record)?;
        Ok(Some((record, secret)))
    }

    /// RegisterDeviceCredential. Durable on return.
    ///
    /// # Errors
    /// `InvalidParameter.InstanceId|ClientId`, `InstancePermissionCheckFailed`,
    /// `DeviceCredentialExsit`, `DeviceCredentialNumExceed`, `ApplyTokenOverFlow`.
    pub async fn register_device(
        &self,
        caller: &Caller,
        instance_id: &str,
        client_id: &str,
    ) -> Result<DeviceCredential> {
        self.check_device_call(
            caller,
            instance_id,
            client_id,
            Operation::RegisterDeviceCredential,
        )?;
        let cap = self.config.max_devices_per_instance;
        let keyring_id = self.keyring.active_id();
        let (record, _) = self
            .commit(|store| {
                if store.device(instance_id, client_id)?.is_some() {
                    return Err(Error::DeviceCredentialExsit);
                }
                if store.device_count(instance_id)? >= cap {
                    return Err(Error::DeviceCredentialNumExceed);
                }
                let now = now_ms();
                let record = RegisteredDevice {
                    instance_id: instance_id.to_owned(),
                    client_id: client_id.to_owned(),
                    device_key_id: new_device_key_id(),
                    create_ms: now,
                    update_ms: now,
                    keyring_id,
                };
                let op = Op::PutDevice {
                    record: record.clone(),
                    replaces: None,
                };
                Ok((vec![op], vec![], record))
            })
            .await?;
        self.credential(record)
    }

    /// GetDeviceCredential.
    ///
    /// # Errors
    /// `InvalidParameter.InstanceId|ClientId`, `InstancePermissionCheckFailed`,
    /// `DeviceCredentialNotFound`, `ApplyTokenOverFlow`.
    pub fn get_device(
        &self,
        caller: &Caller,
        instance_id: &str,
        client_id: &str,
    ) -> Result<DeviceCredential> {
        self.check_device_call(
            caller,
            instance_id,
            client_id,
            Operation::GetDeviceCredential,
        )?;
        let record = self
            .store
            .device(instance_id, client_id)?
            .ok_or(Error::DeviceCredentialNotFound)?;
        self.credential(record)
    }

    /// RefreshDeviceCredential: new key id and secret; the old pair stops working at once and
    /// a DEVICE_CREDENTIAL_REFRESHED revocation is published. Durable on return.
    ///
    /// # Errors
    /// As `get_device`.
    pub async fn refresh_device(
        &self,
        caller: &Caller,
        instance_id: &str,
        client_id: &str,
    ) -> Result<DeviceCredential> {
        self.check_device_call(
            caller,
            instance_id,
            client_id,
            Operation::RefreshDeviceCredential,
        )?;
        let keyring_id = self.keyring.active_id();
        let (record, _) = self
            .commit(|store| {
                let mut record = store
                    .device(instance_id, client_id)?
                    .ok_or(Error::DeviceCredentialNotFound)?;
                let now = now_ms();
                let old = std::mem::replace(&mut record.device_key_id, new_device_key_id());
                record.update_ms = now;
                record.keyring_id = keyring_id;
                let draft = Draft {
                    client_id: client_id.to_owned(),
                    key_id: old.clone(),
                    ..Draft::new(
                        RevocationKind::DeviceCredentialRefreshed,
                        Some(instance_id),
                        "RefreshDeviceCredential",
                        now,
                    )
                };
                let op = Op::PutDevice {
                    record: record.clone(),
                    replaces: Some(old),
                };
                Ok((vec![op], vec![draft], record))
            })
            .await?;
        self.credential(record)
    }

    /// UnRegisterDeviceCredential: the pair stops working at once and a
    /// DEVICE_CREDENTIAL_UNREGISTERED revocation is published. Durable on return.
    ///
    /// # Errors
    /// As `get_device`.
    pub async fn unregister_device(
        &self,
        caller: &Caller,
        instance_id: &str,
        client_id: &str,
    ) -> Result<()> {
        self.check_device_call(
            caller,
            instance_id,
            client_id,
            Operation::UnRegisterDeviceCredential,
        )?;
        self.commit(|store| {
            let record = store
                .device(instance_id, client_id)?
                .ok_or(Error::DeviceCredentialNotFound)?;
            let draft = Draft {
                client_id: client_id.to_owned(),
                key_id: record.device_key_id.clone(),
                ..Draft::new(
                    RevocationKind::DeviceCredentialUnregistered,
                    Some(instance_id),
                    "UnRegisterDeviceCredential",
                    now_ms(),
                )
            };
            Ok((vec![Op::DeleteDevice(record)], vec![draft], ()))
        })
        .await?;
        Ok(())
    }

    /// ListDeviceCredentialClientId: client ids of a group in order. `next_token` (from the
    /// previous page) wins over `page_no`, and is what keeps deep pages fast.
    ///
    /// # Errors
    /// `InvalidParameter.InstanceId|GroupId|PageNo|PageSize|NextToken`,
    /// `InstancePermissionCheckFailed`, `ApplyTokenOverFlow`.
    pub fn list_devices(
        &self,
        caller: &Caller,
        instance_id: &str,
        group_id: &str,
        page_no: u32,
        page_size: u32,
        next_token: &str,
    ) -> Result<DevicePage> {
        check_instance_id(instance_id)?;
        check_group_id(group_id, Field::GroupId)?;
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(Error::invalid(Field::PageSize, "must be 1 to 100"));
        }
        let page_no = page_no.max(1);
        let after = if next_token.is_empty() {
            None
        } else {
            let raw = URL_SAFE_NO_PAD
                .decode(next_token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|c| c.starts_with(group_id) && c.len() <= MAX_CLIENT_ID_LEN)
                .ok_or_else(|| {
                    Error::invalid(
                        Field::NextToken,
                        "not a cursor from a previous page of this group",
                    )
                })?;
            Some(raw)
        };
        caller.check_instance(instance_id)?;
        self.limiter.check(
            caller.access_key_id(),
            Operation::ListDeviceCredentialClientId,
        )?;
        let size = page_size as usize;
        let skip = (page_no as usize - 1).saturating_mul(size);
        let total = self.store.group_count(instance_id, group_id)?;
        if after.is_none() && skip as u64 >= total {
            // Past the last page: answer without scanning.
            return Ok(DevicePage {
                client_ids: Vec::new(),
                next_token: String::new(),
                page_no,
                page_size,
                total,
            });
        }
        let mut client_ids = self.store.device_client_ids(
            instance_id,
            group_id,
            after.as_deref(),
            skip,
            size + 1,
        )?;
        let more = client_ids.len() > size;
        client_ids.truncate(size);
        let next_token = match (more, client_ids.last()) {
            (true, Some(last)) => URL_SAFE_NO_PAD.encode(last),
            _ => String::new(),
        };
        Ok(DevicePage {
            client_ids,
            next_token,
            page_no,
            page_size,
            total,
        })
    }
}
