//! What a broker's HTTP request says: the fields EMQX renders from its placeholders
//! (`${clientid}`, `${username}`, `${password}`, `${action}`, `${topic}`, ...) and rmqtt from
//! its (`%c`, `%u`, `%P`, `%A`, `%t`, ...), wherever the operator put them: the URL query, a
//! JSON object body, or an `application/x-www-form-urlencoded` body. Unknown keys (`peerhost`,
//! `qos`, `retain`, `ipaddr`, ...) are ignored. Anything ambiguous is an error, which the
//! endpoint answers with a deny.

use serde_json::Value;

/// The keys we read, each with the names brokers use for it.
const CLIENT_ID: &[&str] = &["clientid", "client_id"];
const USERNAME: &[&str] = &["username"];
const PASSWORD: &[&str] = &["password"];
const TOPIC: &[&str] = &["topic"];
/// EMQX 5 `${action}`: `publish` / `subscribe`.
const ACTION: &[&str] = &["action"];
/// rmqtt `%A` (and EMQX 4 `%A`): `1` = subscribe, `2` = publish.
const ACCESS: &[&str] = &["access"];

/// Publish or subscribe, as a broker's authorization request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The client publishes to a topic name.
    Publish,
    /// The client subscribes to a topic filter.
    Subscribe,
}

/// The fields of one broker request; absent fields are empty.
#[derive(Debug, Default)]
pub struct Fields {
    /// `clientid`.
    pub client_id: String,
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: String,
    /// `topic`.
    pub topic: String,
    action: String,
    access: String,
}

impl Fields {
    /// Reads the query string and, for a body, JSON or form by `content_type` (sniffed when
    /// absent or unknown).
    ///
    /// # Errors
    /// A reason, for the log: the body does not parse, or a field is given twice with
    /// different values or with a non-scalar JSON value.
    pub fn parse(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, String> {
        let mut fields = Self::default();
        if let Some(q) = query {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                fields.set(&k, v.into_owned())?;
            }
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(fields);
        }
        let content_type = content_type.unwrap_or("").to_ascii_lowercase();
        let json = if content_type.starts_with("application/json") {
            true
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            false
        } else {
            body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        };
        if json {
            let Value::Object(map) = serde_json::from_slice::<Value>(body)
                .map_err(|e| format!("the body is not JSON: {e}"))?
            else {
                return Err("the JSON body is not an object".into());
            };
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    // Only our keys must be scalars; other keys are not ours to judge.
                    _ if !fields.knows(&k) => continue,
                    _ => return Err(format!("`{k}` is not a string")),
                };
                fields.set(&k, v)?;
            }
        } else {
            let text = std::str::from_utf8(body).map_err(|_| "the form body is not UTF-8")?;
            for (k, v) in form_urlencoded::parse(text.as_bytes()) {
                fields.set(&k, v.into_owned())?;
            }
        }
        Ok(fields)
    }

    fn knows(&self, key: &str) -> bool {
        [CLIENT_ID, USERNAME, PASSWORD, TOPIC, ACTION, ACCESS]
            .iter()
            .any(|names| names.contains(&key))
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), String> {
        let slot = if CLIENT_ID.contains(&key) {
            &mut self.client_id
        } else if USERNAME.contains(&key) {
            &mut self.username
        } else if PASSWORD.contains(&key) {
            &mut self.password
        } else if TOPIC.contains(&key) {
            &mut self.topic
        } else if ACTION.contains(&key) {
            &mut self.action
        } else if ACCESS.contains(&key) {
            &mut self.access
        } else {
            return Ok(());
        };
        // The same field in the URL and the body (or twice) must agree: which one the broker
        // meant is not ours to guess.
        if !slot.is_empty() && *slot != value {
            return Err(format!("`{key}` is given twice with different values"));
        }
        *slot = value;
        Ok(())
    }

    /// The action of an authorization request, from `action` or `access`.
    ///
    /// # Errors
    /// Neither is given, one is not a known value, or they disagree.
    pub fn action(&self) -> Result<Action, String> {
        let by_action = match self.action.to_ascii_lowercase().as_str() {
            "" => None,
            "publish" | "pub" => Some(Action::Publish),
            "subscribe" | "sub" => Some(Action::Subscribe),
            other => return Err(format!("unknown action {other:?}")),
        };
        let by_access = match self.access.as_str() {
            "" => None,
            "1" => Some(Action::Subscribe),
            "2" => Some(Action::Publish),
            other => return Err(format!("unknown access {other:?}")),
        };
        match (by_action, by_access) {
            (Some(a), Some(b)) if a != b => Err("`action` and `access` disagree".into()),
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => Err("neither `action` nor `access` is given".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_body_merge_and_must_agree() {
        let f = Fields::parse(
            Some("clientid=GID_a%40%40%40b"),
            Some("application/json"),
            br#"{"username":"u","password":"p","qos":1,"extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                f.client_id.as_str(),
                f.username.as_str(),
                f.password.as_str()
            ),
            ("GID_a@@@b", "u", "p")
        );
        let err = Fields::parse(Some("username=a"), None, b"username=b").unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert!(Fields::parse(None, Some("application/json"), b"{\"username\":[1]}").is_err());
        assert!(Fields::parse(None, Some("application/json"), b"[1]").is_err());
        assert!(Fields::parse(None, Some("application/json"), b"{").is_err());
    }

    #[test]
    fn actions_by_name_or_number() {
        let action = |q: &str| Fields::parse(Some(q), None, b"").unwrap().action();
        assert_eq!(action("action=publish"), Ok(Action::Publish));
        assert_eq!(action("action=subscribe&access=1"), Ok(Action::Subscribe));
        assert_eq!(action("access=2"), Ok(Action::Publish));
        assert!(action("action=publish&access=1").is_err());
        assert!(action("action=all").is_err());
        assert!(action("topic=a").is_err());
    }
}
