//! The parts of a link URL (`scheme://host:port/path?key=value&...`), parsed once for
//! every transport, with errors that name the link and the offending parameter.

use std::str::FromStr;

/// A link URL taken apart. Errors from here and from [`Param`] start with
/// `link '<url>':` so the operator sees which link is meant.
pub struct UrlParts {
    raw: String,
    url: url::Url,
}

impl UrlParts {
    /// Parse `s` as a URL.
    pub fn parse(s: &str) -> Result<UrlParts, String> {
        let url = url::Url::parse(s).map_err(|e| format!("link '{s}': {e}"))?;
        Ok(UrlParts {
            raw: s.to_string(),
            url,
        })
    }

    /// The scheme, lowercase.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// An error about this link.
    pub fn err(&self, why: impl std::fmt::Display) -> String {
        format!("link '{}': {why}", self.raw)
    }

    /// The host, if any and not empty.
    pub fn host(&self) -> Option<&str> {
        self.url.host_str().filter(|h| !h.is_empty())
    }

    /// The path, percent-decoded.
    pub fn path(&self) -> Result<String, String> {
        percent_encoding::percent_decode_str(self.url.path())
            .decode_utf8()
            .map(|p| p.into_owned())
            .map_err(|_| self.err("device path is not valid UTF-8"))
    }

    /// `host:port` of a URL without a path. `usage` shows the expected form when the
    /// host is missing, `no_port` is the error without a port (`None`: the port is
    /// `default_port`).
    pub fn host_port(
        &self,
        usage: &str,
        no_port: &str,
        default_port: Option<u16>,
    ) -> Result<(String, u16), String> {
        let host = self
            .host()
            .ok_or_else(|| self.err(format!("expected {usage}")))?;
        let port = self
            .url
            .port()
            .or(default_port)
            .ok_or_else(|| self.err(no_port))?;
        if !matches!(self.url.path(), "" | "/") {
            return Err(self.err(format!("unexpected path '{}'", self.url.path())));
        }
        Ok((host.to_string(), port))
    }

    /// The query parameters in order, each key at most once.
    pub fn params(&self) -> Result<Vec<Param>, String> {
        let mut out: Vec<Param> = Vec::new();
        for (k, v) in self.url.query_pairs() {
            if out.iter().any(|p| p.key == k) {
                return Err(self.err(format!("parameter '{k}' given twice")));
            }
            out.push(Param {
                url: self.raw.clone(),
                key: k.into_owned(),
                value: v.into_owned(),
            });
        }
        Ok(out)
    }
}

/// One `key=value` of a link URL.
pub struct Param {
    url: String,
    /// The key, percent-decoded.
    pub key: String,
    /// The value, percent-decoded.
    pub value: String,
}

impl Param {
    /// The error for a value that does not fit: `why` says what was expected.
    pub fn bad(&self, why: &str) -> String {
        format!(
            "link '{}': bad {}='{}': {why}",
            self.url, self.key, self.value
        )
    }

    /// The value as a number for which `ok` holds, else [`Param::bad`] with `why`.
    pub fn number<T: FromStr>(&self, ok: impl Fn(&T) -> bool, why: &str) -> Result<T, String> {
        self.value
            .parse::<T>()
            .ok()
            .filter(|x| ok(x))
            .ok_or_else(|| self.bad(why))
    }

    /// The value as one of `choices` (`(text, value)` pairs, matched exactly).
    pub fn one_of<T: Copy>(&self, choices: &[(&str, T)], why: &str) -> Result<T, String> {
        choices
            .iter()
            .find(|(name, _)| *name == self.value)
            .map(|(_, v)| *v)
            .ok_or_else(|| self.bad(why))
    }

    /// The error for a key the link does not know; `known` lists those it does.
    pub fn unknown(&self, known: &str) -> String {
        format!(
            "link '{}': unknown parameter '{}' (known: {known})",
            self.url, self.key
        )
    }
}

/// The keys of the query in `rest` (what follows `scheme://`), percent-decoded, for
/// checks made before the scheme is known.
pub fn query_keys(rest: &str) -> Vec<String> {
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect()
}

/// A path for a URL: what is not plainly safe in a device path is `%XX`-encoded.
pub fn encode_path(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b':')
        .remove(b'+')
        .remove(b'@')
        .remove(b',')
        .remove(b'=');
    utf8_percent_encode(s, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded_once_and_errors_name_them() {
        let u = UrlParts::parse("x+tcp://h:1?a=1&b=%41%20&c=").unwrap();
        assert_eq!(u.host_port("x", "no port", None).unwrap(), ("h".into(), 1));
        let p = u.params().unwrap();
        let kv: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(kv, [("a", "1"), ("b", "A "), ("c", "")]);
        assert_eq!(p[0].number::<u8>(|n| *n < 2, "small").unwrap(), 1);
        let e = p[1].number::<u8>(|_| true, "a byte").unwrap_err();
        assert_eq!(e, "link 'x+tcp://h:1?a=1&b=%41%20&c=': bad b='A ': a byte");
        assert!(p[2]
            .unknown("a, b")
            .contains("unknown parameter 'c' (known: a, b)"));
        let twice = UrlParts::parse("x://h:1?a=1&a=2").unwrap().params();
        assert!(twice
            .err()
            .unwrap_or_default()
            .contains("parameter 'a' given twice"));
        let path = UrlParts::parse("x://h:1/p").unwrap();
        assert!(path
            .host_port("x", "", None)
            .unwrap_err()
            .contains("path '/p'"));
        let dflt = UrlParts::parse("x://h").unwrap();
        assert_eq!(dflt.host_port("x", "", Some(9)).unwrap().1, 9);
        assert_eq!(query_keys("h:1?%6Eoise=1&b"), ["noise", "b"]);
    }

    #[test]
    fn paths_round_trip_through_the_encoding() {
        for p in [
            "/dev/ttyUSB0",
            "/dev/serial/by-id/usb-Mobilinkd TNC 3 (x)",
            "/dé",
        ] {
            let url = format!("kiss+serial://{}", encode_path(p));
            assert_eq!(UrlParts::parse(&url).unwrap().path().unwrap(), p, "{url}");
        }
        assert_eq!(encode_path("/a b:c"), "/a%20b:c");
    }
}
