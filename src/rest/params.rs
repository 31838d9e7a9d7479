//! Request parameters: the query string and an `application/x-www-form-urlencoded` body,
//! decoded with form rules (`+` is a space), in arrival order. Both signature schemes sign the
//! decoded values, so nothing here re-encodes or normalises anything.

/// Every decoded request parameter, query first, then form body.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
    /// How many of `pairs` came from the query string (V3 signs only those).
    query_len: usize,
}

impl Params {
    /// Decodes the query string alone (enough to pick the response format early).
    pub(crate) fn from_query(query: Option<&str>) -> Self {
        let pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Self {
            query_len: pairs.len(),
            pairs,
        }
    }

    /// Adds the body's parameters when it is a form (any other body carries no parameters,
    /// though a V3 signature still covers its hash).
    pub(crate) fn add_form_body(&mut self, content_type: Option<&str>, body: &[u8]) {
        let is_form = content_type.is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if is_form && !body.is_empty() {
            self.pairs.extend(form_urlencoded::parse(body).into_owned());
        }
    }

    /// All parameters (query and body).
    pub(crate) fn all(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The query-string parameters only.
    pub(crate) fn query(&self) -> &[(String, String)] {
        &self.pairs[..self.query_len]
    }

    /// The first value of `name`, if present. Names are case-sensitive, as Alibaba's are.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or "" when absent: the core reports a missing business
    /// parameter as `InvalidParameter.<Name>`, as Alibaba does.
    pub(crate) fn get_or_empty(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_body_merge_and_decode() {
        let mut p = Params::from_query(Some("Action=QueryToken&Token=a+b%2Bc&Empty="));
        p.add_form_body(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"InstanceId=post-1&Token=second",
        );
        assert_eq!(p.get("Token"), Some("a b+c"));
        assert_eq!(p.get("Empty"), Some(""));
        assert_eq!(p.get("InstanceId"), Some("post-1"));
        assert_eq!(p.get_or_empty("Missing"), "");
        assert_eq!(p.query().len(), 3);
        assert_eq!(p.all().len(), 5);
    }

    #[test]
    fn non_form_bodies_carry_no_parameters() {
        let mut p = Params::from_query(None);
        p.add_form_body(Some("application/json"), b"InstanceId=x");
        p.add_form_body(None, b"InstanceId=x");
        assert!(p.all().is_empty());
    }
}
