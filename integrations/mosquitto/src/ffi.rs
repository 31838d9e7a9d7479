//! The C boundary with Mosquitto 2.0 (plugin API v5, `mosquitto_plugin.h` and
//! `mosquitto_broker.h` of 2.0.11): declarations written by hand (a dozen items, so no bindgen
//! or extra crate), the exported entry points, and the event callbacks. All unsafe code of the
//! plugin is here. Every callback catches panics: a panic must never unwind into C.
//!
//! Thread rule: Mosquitto 2.0 is single-threaded and its broker functions (kick, log) walk
//! unlocked global state (`db.contexts_by_id`), so they are only called from callbacks, i.e. on
//! the broker thread. Revocations from the watch thread are queued and drained on
//! `MOSQ_EVT_TICK`.

use std::{
    ffi::{c_char, c_int, c_void, CStr, CString},
    panic::{catch_unwind, AssertUnwindSafe},
};

use crate::{Access, Config, Level, Plugin, Verdict};

const MOSQ_ERR_SUCCESS: c_int = 0;
const MOSQ_ERR_INVAL: c_int = 3;
const MOSQ_ERR_AUTH: c_int = 11;
const MOSQ_ERR_ACL_DENIED: c_int = 12;
const MOSQ_ERR_UNKNOWN: c_int = 13;
const MOSQ_ERR_PLUGIN_DEFER: c_int = 17;

const MOSQ_EVT_ACL_CHECK: c_int = 2;
const MOSQ_EVT_BASIC_AUTH: c_int = 3;
const MOSQ_EVT_TICK: c_int = 9;
const MOSQ_EVT_DISCONNECT: c_int = 10;

const MOSQ_ACL_READ: c_int = 0x01;
const MOSQ_ACL_WRITE: c_int = 0x02;
const MOSQ_ACL_SUBSCRIBE: c_int = 0x04;
const MOSQ_ACL_UNSUBSCRIBE: c_int = 0x08;

const MOSQ_LOG_INFO: c_int = 1 << 0;
const MOSQ_LOG_NOTICE: c_int = 1 << 1;
const MOSQ_LOG_WARNING: c_int = 1 << 2;
const MOSQ_LOG_ERR: c_int = 1 << 3;

/// `struct mosquitto_opt`.
#[repr(C)]
pub struct MosquittoOpt {
    key: *mut c_char,
    value: *mut c_char,
}

/// `struct mosquitto_evt_basic_auth`.
#[repr(C)]
struct EvtBasicAuth {
    future: *mut c_void,
    client: *mut c_void,
    username: *mut c_char,
    password: *mut c_char,
    future2: [*mut c_void; 4],
}

/// `struct mosquitto_evt_acl_check`.
#[repr(C)]
struct EvtAclCheck {
    future: *mut c_void,
    client: *mut c_void,
    topic: *const c_char,
    payload: *const c_void,
    properties: *mut c_void,
    access: c_int,
    payloadlen: u32,
    qos: u8,
    retain: bool,
    future2: [*mut c_void; 4],
}

/// `struct mosquitto_evt_disconnect`.
#[repr(C)]
struct EvtDisconnect {
    future: *mut c_void,
    client: *mut c_void,
    reason: c_int,
    future2: [*mut c_void; 4],
}

type Callback = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

extern "C" {
    fn mosquitto_callback_register(
        identifier: *mut c_void,
        event: c_int,
        cb_func: Callback,
        event_data: *const c_void,
        userdata: *mut c_void,
    ) -> c_int;
    fn mosquitto_callback_unregister(
        identifier: *mut c_void,
        event: c_int,
        cb_func: Callback,
        event_data: *const c_void,
    ) -> c_int;
    fn mosquitto_log_printf(level: c_int, fmt: *const c_char, ...);
    fn mosquitto_client_id(client: *const c_void) -> *const c_char;
    fn mosquitto_kick_client_by_clientid(clientid: *const c_char, with_will: bool) -> c_int;
}

/// The plugin plus the identifier needed to unregister its callbacks.
struct Loaded {
    plugin: Plugin,
    identifier: *mut c_void,
}

const CALLBACKS: [(c_int, Callback); 4] = [
    (MOSQ_EVT_BASIC_AUTH, on_basic_auth),
    (MOSQ_EVT_ACL_CHECK, on_acl_check),
    (MOSQ_EVT_DISCONNECT, on_disconnect),
    (MOSQ_EVT_TICK, on_tick),
];

fn log(level: Level, line: &str) {
    let level = match level {
        Level::Info => MOSQ_LOG_INFO,
        Level::Notice => MOSQ_LOG_NOTICE,
        Level::Warning => MOSQ_LOG_WARNING,
        Level::Error => MOSQ_LOG_ERR,
    };
    let line = CString::new(format!("mqtt-tokend: {line}").replace('\0', " ")).unwrap_or_default();
    // SAFETY: called on the broker thread only (from init, cleanup or a callback); the format
    // is a literal "%s" and the one argument a valid NUL-terminated string that outlives the
    // call.
    unsafe { mosquitto_log_printf(level, c"%s".as_ptr(), line.as_ptr()) };
}

/// Borrows a C string as UTF-8; `None` for NULL or invalid UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for `'a`.
unsafe fn str_from<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// The client id of a broker client, if it has a UTF-8 one.
///
/// # Safety
/// `client` is a `struct mosquitto *` the broker passed to the current callback.
unsafe fn client_id<'a>(client: *mut c_void) -> Option<&'a str> {
    if client.is_null() {
        return None;
    }
    // SAFETY: the broker's client is valid during the callback, and the id it returns lives
    // as long as the client (we copy what we keep).
    unsafe { str_from(mosquitto_client_id(client)) }
}

/// # Safety
/// `userdata` is the pointer `mosquitto_plugin_init` registered: a live `Loaded`.
unsafe fn loaded<'a>(userdata: *mut c_void) -> Option<&'a Loaded> {
    // SAFETY: per contract, either NULL or the `Box<Loaded>` leaked in init, freed only in
    // cleanup after every callback was unregistered.
    unsafe { userdata.cast::<Loaded>().as_ref() }
}

/// Runs `f`, turning a panic into `fallback`.
fn guarded(fallback: c_int, f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Reports plugin API v5 support.
///
/// # Safety
/// `supported_versions` points to `supported_version_count` ints (Mosquitto's contract).
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_version(
    supported_version_count: c_int,
    supported_versions: *const c_int,
) -> c_int {
    guarded(-1, || {
        let n = usize::try_from(supported_version_count).unwrap_or(0);
        if supported_versions.is_null() || n == 0 {
            return -1;
        }
        // SAFETY: Mosquitto passes an array of `supported_version_count` ints.
        let versions = unsafe { std::slice::from_raw_parts(supported_versions, n) };
        if versions.contains(&5) {
            5
        } else {
            -1
        }
    })
}

/// Parses the options, starts the plugin and registers its callbacks.
///
/// # Safety
/// Mosquitto's contract: `identifier` is this plugin's id, `userdata` a writable pointer slot,
/// `options` an array of `option_count` key/value C strings.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_init(
    identifier: *mut c_void,
    userdata: *mut *mut c_void,
    options: *mut MosquittoOpt,
    option_count: c_int,
) -> c_int {
    guarded(MOSQ_ERR_UNKNOWN, || {
        if userdata.is_null() {
            return MOSQ_ERR_INVAL;
        }
        let n = usize::try_from(option_count).unwrap_or(0);
        let opts: &[MosquittoOpt] = if options.is_null() || n == 0 {
            &[]
        } else {
            // SAFETY: Mosquitto passes `option_count` options, valid during this call.
            unsafe { std::slice::from_raw_parts(options, n) }
        };
        let mut pairs = Vec::with_capacity(opts.len());
        for o in opts {
            // SAFETY: option keys and values are NUL-terminated strings owned by the broker
            // for the duration of init.
            let (k, v) = unsafe { (str_from(o.key), str_from(o.value)) };
            match (k, v) {
                (Some(k), Some(v)) => pairs.push((k, v)),
                _ => {
                    log(Level::Error, "a plugin_opt_ line is not valid UTF-8");
                    return MOSQ_ERR_INVAL;
                }
            }
        }
        let config = match Config::from_options(pairs) {
            Ok(c) => c,
            Err(e) => {
                log(Level::Error, &e);
                return MOSQ_ERR_INVAL;
            }
        };
        let addr = config.service_addrs.join(",");
        // Says which certificate the broker presents, so a mutual TLS set-up can be checked
        // in the broker's log.
        let identity = config
            .cert_file
            .as_ref()
            .map(|cert| format!(", client certificate {}", cert.display()))
            .unwrap_or_default();
        let plugin = match Plugin::start(config) {
            Ok(p) => p,
            Err(e) => {
                log(Level::Error, &e);
                return MOSQ_ERR_UNKNOWN;
            }
        };
        let raw = Box::into_raw(Box::new(Loaded { plugin, identifier }));
        for (i, (event, cb)) in CALLBACKS.iter().enumerate() {
            // SAFETY: `identifier` is ours; `raw` stays valid until cleanup unregisters these.
            let rc = unsafe {
                mosquitto_callback_register(identifier, *event, *cb, std::ptr::null(), raw.cast())
            };
            if rc != MOSQ_ERR_SUCCESS {
                log(
                    Level::Error,
                    &format!("cannot register callback {event}: {rc}"),
                );
                for (event, cb) in &CALLBACKS[..i] {
                    // SAFETY: undoing registrations made just above with the same arguments.
                    unsafe {
                        mosquitto_callback_unregister(identifier, *event, *cb, std::ptr::null())
                    };
                }
                // SAFETY: `raw` came from Box::into_raw above and no callback refers to it.
                let mut loaded = unsafe { Box::from_raw(raw) };
                loaded.plugin.stop();
                return rc;
            }
        }
        // SAFETY: `userdata` is non-NULL (checked) and writable per Mosquitto's contract.
        unsafe { *userdata = raw.cast() };
        log(
            Level::Notice,
            &format!("plugin loaded, service {addr}{identity}"),
        );
        MOSQ_ERR_SUCCESS
    })
}

/// Unregisters the callbacks and stops the plugin.
///
/// # Safety
/// `userdata` is what `mosquitto_plugin_init` stored (or NULL).
#[no_mangle]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    userdata: *mut c_void,
    _options: *mut MosquittoOpt,
    _option_count: c_int,
) -> c_int {
    guarded(MOSQ_ERR_UNKNOWN, || {
        if userdata.is_null() {
            return MOSQ_ERR_SUCCESS;
        }
        let raw = userdata.cast::<Loaded>();
        // SAFETY: `raw` is the live Box leaked in init.
        let identifier = unsafe { (*raw).identifier };
        for (event, cb) in &CALLBACKS {
            // SAFETY: same identifier and callbacks as registered in init.
            unsafe { mosquitto_callback_unregister(identifier, *event, *cb, std::ptr::null()) };
        }
        // SAFETY: no callback refers to `raw` any more; it came from Box::into_raw.
        let mut loaded = unsafe { Box::from_raw(raw) };
        loaded.plugin.stop();
        MOSQ_ERR_SUCCESS
    })
}

/// `MOSQ_EVT_BASIC_AUTH`: ask the service, cache the grant.
unsafe extern "C" fn on_basic_auth(
    _event: c_int,
    data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guarded(MOSQ_ERR_AUTH, || {
        // SAFETY: the broker passes a `mosquitto_evt_basic_auth` valid for this call, and our
        // userdata; strings are NUL-terminated or NULL.
        let (Some(loaded), Some(ev)) = (unsafe { loaded(userdata) }, unsafe {
            data.cast::<EvtBasicAuth>().as_ref()
        }) else {
            return MOSQ_ERR_AUTH;
        };
        // SAFETY: as above; the client is valid during the callback.
        let (id, username, password) = unsafe {
            (
                client_id(ev.client),
                str_from(ev.username),
                str_from(ev.password),
            )
        };
        let Some(id) = id else {
            return MOSQ_ERR_AUTH;
        };
        match loaded
            .plugin
            .on_connect(id, ev.client as usize, username, password)
        {
            Verdict::Allow => MOSQ_ERR_SUCCESS,
            Verdict::Deny(why) => {
                log(Level::Notice, &format!("CONNECT of {id} denied: {why}"));
                MOSQ_ERR_AUTH
            }
            Verdict::Defer(why) => {
                log(Level::Warning, &format!("CONNECT of {id} deferred: {why}"));
                MOSQ_ERR_PLUGIN_DEFER
            }
        }
    })
}

/// `MOSQ_EVT_ACL_CHECK`: decide from the cached grant.
unsafe extern "C" fn on_acl_check(
    _event: c_int,
    data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guarded(MOSQ_ERR_ACL_DENIED, || {
        // SAFETY: the broker passes a `mosquitto_evt_acl_check` valid for this call.
        let (Some(loaded), Some(ev)) = (unsafe { loaded(userdata) }, unsafe {
            data.cast::<EvtAclCheck>().as_ref()
        }) else {
            return MOSQ_ERR_ACL_DENIED;
        };
        // SAFETY: client and topic are valid for the call.
        let (id, topic) = unsafe { (client_id(ev.client), str_from(ev.topic)) };
        let (Some(id), Some(topic)) = (id, topic) else {
            return MOSQ_ERR_ACL_DENIED;
        };
        let access = match ev.access {
            MOSQ_ACL_READ => Access::Read,
            MOSQ_ACL_WRITE => Access::Write,
            MOSQ_ACL_SUBSCRIBE => Access::Subscribe,
            MOSQ_ACL_UNSUBSCRIBE => Access::Unsubscribe,
            _ => return MOSQ_ERR_ACL_DENIED,
        };
        if loaded.plugin.on_acl(id, ev.client as usize, access, topic) {
            MOSQ_ERR_SUCCESS
        } else {
            MOSQ_ERR_ACL_DENIED
        }
    })
}

/// `MOSQ_EVT_DISCONNECT`: forget the grant.
unsafe extern "C" fn on_disconnect(
    _event: c_int,
    data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guarded(MOSQ_ERR_SUCCESS, || {
        // SAFETY: the broker passes a `mosquitto_evt_disconnect` valid for this call.
        let (Some(loaded), Some(ev)) = (unsafe { loaded(userdata) }, unsafe {
            data.cast::<EvtDisconnect>().as_ref()
        }) else {
            return MOSQ_ERR_SUCCESS;
        };
        // SAFETY: the client is valid for the call.
        if let Some(id) = unsafe { client_id(ev.client) } {
            loaded.plugin.on_disconnect(id, ev.client as usize);
        }
        MOSQ_ERR_SUCCESS
    })
}

/// `MOSQ_EVT_TICK`: kick revoked and expired clients, print queued log lines.
unsafe extern "C" fn on_tick(_event: c_int, _data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(MOSQ_ERR_SUCCESS, || {
        // SAFETY: our userdata, live while the callback is registered.
        let Some(loaded) = (unsafe { loaded(userdata) }) else {
            return MOSQ_ERR_SUCCESS;
        };
        let (kicks, lines) = loaded.plugin.on_tick();
        for (level, line) in lines {
            log(level, &line);
        }
        for id in kicks {
            let Ok(cid) = CString::new(id.as_str()) else {
                continue;
            };
            // SAFETY: on the broker thread (tick callback), with a valid C string; a client
            // that already left gives MOSQ_ERR_NOT_FOUND, which is fine.
            unsafe { mosquitto_kick_client_by_clientid(cid.as_ptr(), false) };
            log(Level::Notice, &format!("kicked {id}"));
        }
        MOSQ_ERR_SUCCESS
    })
}
