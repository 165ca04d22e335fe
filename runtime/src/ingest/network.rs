//! collectd's binary network protocol (the `network` plugin, 5.x): decoding one datagram into
//! value lists and notifications, with signature (HMAC-SHA-256) and encryption (AES-256-OFB,
//! SHA-1 checksum) applied as collectd's own receiver applies them. No crate implements it;
//! this one is small, exact, and never panics on any input.
//!
//! A datagram is a run of parts `type: u16 BE, length: u16 BE (header included), payload`.
//! Identifier, time and interval parts set fields that carry over to the following parts of the
//! same datagram; each VALUES part yields a value list and each MESSAGE part a notification.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use ofb::cipher::{KeyIvInit, StreamCipher};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::value::Sample;

const HOST: u16 = 0x0000;
const TIME: u16 = 0x0001;
const PLUGIN: u16 = 0x0002;
const PLUGIN_INSTANCE: u16 = 0x0003;
const TYPE: u16 = 0x0004;
const TYPE_INSTANCE: u16 = 0x0005;
const VALUES: u16 = 0x0006;
const INTERVAL: u16 = 0x0007;
const TIME_HR: u16 = 0x0008;
const INTERVAL_HR: u16 = 0x0009;
const MESSAGE: u16 = 0x0100;
const SEVERITY: u16 = 0x0101;
const SIGN_SHA256: u16 = 0x0200;
const ENCR_AES256: u16 = 0x0210;

/// What a receiver accepts, as collectd's `SecurityLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityLevel {
    /// Plain and signed data (signatures unchecked); encrypted data is dropped.
    None,
    /// Signed (verified) and encrypted data; plain data is refused.
    Sign,
    /// Encrypted data only.
    Encrypt,
}

/// How a decoded item arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    None,
    Signed,
    Encrypted,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::Signed => "sign",
            Security::Encrypted => "encrypt",
        }
    }
}

/// The identifier fields as they stand when a part is dispatched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    pub host: String,
    pub plugin: String,
    pub plugin_instance: String,
    pub type_: String,
    pub type_instance: String,
    /// collectd's cdtime: 2^-30 seconds since the epoch.
    pub time_hr: u64,
    pub interval_hr: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Values {
        fields: Fields,
        samples: Vec<Sample>,
    },
    Notification {
        fields: Fields,
        severity: u64,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub security: Security,
    pub item: Item,
}

/// Why (part of) a datagram was not used. Decoding stops at the first one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated part header at offset {offset}")]
    TruncatedHeader { offset: usize },
    #[error("part 0x{part:04x} at offset {offset} claims {length} bytes, {left} are left")]
    LengthTooLong {
        part: u16,
        offset: usize,
        length: usize,
        left: usize,
    },
    #[error("part 0x{part:04x} at offset {offset} has an impossible length {length}")]
    BadLength {
        part: u16,
        offset: usize,
        length: usize,
    },
    #[error("string part 0x{part:04x} at offset {offset} is not NUL-terminated UTF-8")]
    BadString { part: u16, offset: usize },
    #[error("values part at offset {offset} has an unknown data-source type {ds_type}")]
    BadDsType { offset: usize, ds_type: u8 },
    #[error("plain data refused at security level {0:?}")]
    Unsigned(SecurityLevel),
    #[error("encrypted data dropped: security level none has no credentials")]
    EncryptedAtNone,
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    #[error("signature of user `{0}` does not verify")]
    BadSignature(String),
    #[error("encrypted part of user `{0}` does not decrypt (wrong password?)")]
    BadChecksum(String),
}

/// `user → password`, from collectd's AuthFile format.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
}

impl Credentials {
    /// Parse `user: password` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Self {
        let users = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(u, p)| (u.trim().to_string(), p.trim().to_string()))
            .collect();
        Self { users }
    }

    pub fn insert(&mut self, user: &str, password: &str) {
        self.users.insert(user.into(), password.into());
    }

    fn password(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }
}

/// Decode one datagram, appending what it carries to `out` (items decoded before an error are
/// kept: collectd dispatches them too).
pub fn decode(
    datagram: &[u8],
    level: SecurityLevel,
    credentials: &Credentials,
    out: &mut Vec<Decoded>,
) -> Result<(), DecodeError> {
    Parser {
        level,
        credentials,
        out,
    }
    .packet(datagram, 0, Security::None)
}

struct Parser<'a> {
    level: SecurityLevel,
    credentials: &'a Credentials,
    out: &'a mut Vec<Decoded>,
}

impl Parser<'_> {
    /// `base` is the offset of `buf` in the datagram, for messages.
    fn packet(&mut self, buf: &[u8], base: usize, security: Security) -> Result<(), DecodeError> {
        let mut fields = Fields::default();
        // Not part of the identifier: kept for the MESSAGE part that follows it.
        let mut severity = 0;
        let mut pos = 0;
        while pos < buf.len() {
            let offset = base + pos;
            let Some(header) = buf.get(pos..pos + 4) else {
                return Err(DecodeError::TruncatedHeader { offset });
            };
            let part = u16::from_be_bytes([header[0], header[1]]);
            let length = u16::from_be_bytes([header[2], header[3]]) as usize;
            let left = buf.len() - pos;
            if length > left {
                return Err(DecodeError::LengthTooLong {
                    part,
                    offset,
                    length,
                    left,
                });
            }
            if length < 4 {
                return Err(DecodeError::BadLength {
                    part,
                    offset,
                    length,
                });
            }
            let body = &buf[pos + 4..pos + length];
            match part {
                ENCR_AES256 => return self.encrypted(body, offset),
                SIGN_SHA256 => {
                    return self.signed(
                        body,
                        &buf[pos + length..],
                        offset,
                        base + pos + length,
                        security,
                    );
                }
                _ => {}
            }
            let accepted = match self.level {
                SecurityLevel::None => true,
                SecurityLevel::Sign => security != Security::None,
                SecurityLevel::Encrypt => security == Security::Encrypted,
            };
            if !accepted {
                return Err(DecodeError::Unsigned(self.level));
            }
            self.part(part, body, offset, &mut fields, &mut severity, security)?;
            pos += length;
        }
        Ok(())
    }

    fn part(
        &mut self,
        part: u16,
        body: &[u8],
        offset: usize,
        fields: &mut Fields,
        severity: &mut u64,
        security: Security,
    ) -> Result<(), DecodeError> {
        let string = || -> Result<String, DecodeError> {
            match body.split_last() {
                Some((0, text)) => String::from_utf8(text.to_vec())
                    .map_err(|_| DecodeError::BadString { part, offset }),
                _ => Err(DecodeError::BadString { part, offset }),
            }
        };
        let number = || -> Result<u64, DecodeError> {
            let bytes: [u8; 8] = body.try_into().map_err(|_| DecodeError::BadLength {
                part,
                offset,
                length: body.len() + 4,
            })?;
            Ok(u64::from_be_bytes(bytes))
        };
        match part {
            HOST => fields.host = string()?,
            PLUGIN => fields.plugin = string()?,
            PLUGIN_INSTANCE => fields.plugin_instance = string()?,
            TYPE => fields.type_ = string()?,
            TYPE_INSTANCE => fields.type_instance = string()?,
            TIME => fields.time_hr = number()?.saturating_mul(1 << 30),
            TIME_HR => fields.time_hr = number()?,
            INTERVAL => fields.interval_hr = number()?.saturating_mul(1 << 30),
            INTERVAL_HR => fields.interval_hr = number()?,
            SEVERITY => *severity = number()?,
            MESSAGE => {
                let message = string()?;
                self.out.push(Decoded {
                    security,
                    item: Item::Notification {
                        fields: fields.clone(),
                        severity: *severity,
                        message,
                    },
                });
            }
            VALUES => {
                let samples = values(body, offset)?;
                self.out.push(Decoded {
                    security,
                    item: Item::Values {
                        fields: fields.clone(),
                        samples,
                    },
                });
            }
            // Unknown part types are skipped, as collectd does.
            _ => {}
        }
        Ok(())
    }

    fn signed(
        &mut self,
        body: &[u8],
        rest: &[u8],
        offset: usize,
        rest_base: usize,
        security: Security,
    ) -> Result<(), DecodeError> {
        if body.len() < 32 {
            return Err(DecodeError::BadLength {
                part: SIGN_SHA256,
                offset,
                length: body.len() + 4,
            });
        }
        let (tag, user) = body.split_at(32);
        let user = String::from_utf8_lossy(user).into_owned();
        if self.level == SecurityLevel::None {
            // collectd without credentials skips the signature and reads on, unchecked.
            return self.packet(rest, rest_base, security);
        }
        let password = self
            .credentials
            .password(&user)
            .ok_or_else(|| DecodeError::UnknownUser(user.clone()))?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(password.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(user.as_bytes());
        mac.update(rest);
        // Constant-time comparison.
        mac.verify_slice(tag)
            .map_err(|_| DecodeError::BadSignature(user))?;
        let security = if security == Security::Encrypted {
            security
        } else {
            Security::Signed
        };
        self.packet(rest, rest_base, security)
    }

    fn encrypted(&mut self, body: &[u8], offset: usize) -> Result<(), DecodeError> {
        let bad = || DecodeError::BadLength {
            part: ENCR_AES256,
            offset,
            length: body.len() + 4,
        };
        let user_len =
            u16::from_be_bytes(body.get(0..2).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let user = body.get(2..2 + user_len).ok_or_else(bad)?;
        let user = String::from_utf8_lossy(user).into_owned();
        let iv = body.get(2 + user_len..2 + user_len + 16).ok_or_else(bad)?;
        let sealed = &body[2 + user_len + 16..];
        if sealed.len() < 20 {
            return Err(bad());
        }
        if self.level == SecurityLevel::None {
            return Err(DecodeError::EncryptedAtNone);
        }
        let password = self
            .credentials
            .password(&user)
            .ok_or_else(|| DecodeError::UnknownUser(user.clone()))?;
        let key = Sha256::digest(password.as_bytes());
        let mut plain = sealed.to_vec();
        ofb::Ofb::<aes::Aes256>::new_from_slices(&key, iv)
            .expect("key is 32 bytes and iv 16")
            .apply_keystream(&mut plain);
        let (checksum, payload) = plain.split_at(20);
        if Sha1::digest(payload).as_slice() != checksum {
            return Err(DecodeError::BadChecksum(user));
        }
        let payload_base = offset + 4 + 2 + user_len + 16 + 20;
        self.packet(payload, payload_base, Security::Encrypted)
    }
}

fn values(body: &[u8], offset: usize) -> Result<Vec<Sample>, DecodeError> {
    let bad = || DecodeError::BadLength {
        part: VALUES,
        offset,
        length: body.len() + 4,
    };
    let count = u16::from_be_bytes(body.get(0..2).ok_or_else(bad)?.try_into().unwrap()) as usize;
    if body.len() != 2 + count * 9 {
        return Err(bad());
    }
    let types = &body[2..2 + count];
    let data = &body[2 + count..];
    types
        .iter()
        .zip(data.chunks_exact(8))
        .map(|(&t, v)| {
            let v: [u8; 8] = v.try_into().unwrap();
            Ok(match t {
                0 => Sample::Counter(u64::from_be_bytes(v)),
                1 => Sample::Gauge(f64::from_le_bytes(v)),
                2 => Sample::Derive(i64::from_be_bytes(v)),
                3 => Sample::Absolute(u64::from_be_bytes(v)),
                other => {
                    return Err(DecodeError::BadDsType {
                        offset,
                        ds_type: other,
                    });
                }
            })
        })
        .collect()
}

/// cdtime (2^-30 s) to nanoseconds.
pub fn cdtime_to_ns(t: u64) -> u64 {
    ((t as u128 * 1_000_000_000) >> 30).min(u64::MAX as u128) as u64
}

/// Into the engine's model. A notification with a severity collectd does not define is refused.
pub fn to_ingested(item: Item, now: u64) -> Result<super::value::Ingested, String> {
    use super::value::{Identifier, Ingested, Notification, Severity, ValueList};
    let (fields, rest) = match item {
        Item::Values { fields, samples } => (fields, Ok(samples)),
        Item::Notification {
            fields,
            severity,
            message,
        } => (fields, Err((severity, message))),
    };
    let time = if fields.time_hr == 0 {
        now
    } else {
        cdtime_to_ns(fields.time_hr)
    };
    let identifier = Identifier {
        host: fields.host,
        plugin: fields.plugin,
        plugin_instance: fields.plugin_instance,
        type_: fields.type_,
        type_instance: fields.type_instance,
    };
    match rest {
        Ok(samples) => {
            if identifier.host.is_empty()
                || identifier.plugin.is_empty()
                || identifier.type_.is_empty()
            {
                return Err(format!(
                    "value list without host, plugin or type: `{identifier}`"
                ));
            }
            Ok(Ingested::Values(ValueList {
                identifier,
                time,
                interval: cdtime_to_ns(fields.interval_hr),
                samples,
            }))
        }
        Err((severity, message)) => {
            let severity = match severity {
                1 => Severity::Failure,
                2 => Severity::Warning,
                4 => Severity::Okay,
                other => return Err(format!("notification with unknown severity {other}")),
            };
            Ok(Ingested::Notification(Notification {
                severity,
                time,
                message,
                identifier,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    use crate::test_fixtures::bytes as fixture;

    fn creds(password: &str) -> Credentials {
        Credentials::parse(&format!(
            "# comment\n\nfixture-user: {password}\nother: x\n"
        ))
    }

    fn decode_all(
        bytes: &[u8],
        level: SecurityLevel,
        c: &Credentials,
    ) -> Result<Vec<Decoded>, DecodeError> {
        let mut out = Vec::new();
        decode(bytes, level, c, &mut out).map(|()| out)
    }

    /// The fixture's expected JSON, in the form the fixtures use.
    fn to_json(d: &Decoded) -> Json {
        let f = match &d.item {
            Item::Values { fields, .. } | Item::Notification { fields, .. } => fields,
        };
        let mut j = serde_json::json!({
            "security": d.security.as_str(),
            "host": f.host, "plugin": f.plugin, "plugin_instance": f.plugin_instance,
            "type": f.type_, "type_instance": f.type_instance, "time_hr": f.time_hr,
        });
        match &d.item {
            Item::Values { samples, .. } => {
                j["kind"] = "values".into();
                j["interval_hr"] = f.interval_hr.into();
                j["values"] = samples
                    .iter()
                    .map(|s| match *s {
                        Sample::Gauge(g) if g.is_nan() => {
                            serde_json::json!({"ds_type": "gauge", "value": "NaN"})
                        }
                        Sample::Gauge(g) => serde_json::json!({"ds_type": "gauge", "value": g}),
                        Sample::Derive(v) => serde_json::json!({"ds_type": "derive", "value": v}),
                        Sample::Counter(v) => serde_json::json!({"ds_type": "counter", "value": v}),
                        Sample::Absolute(v) => {
                            serde_json::json!({"ds_type": "absolute", "value": v})
                        }
                    })
                    .collect();
            }
            Item::Notification {
                severity, message, ..
            } => {
                j["kind"] = "notification".into();
                j["severity"] = (*severity).into();
                j["message"] = message.as_str().into();
            }
        }
        j
    }

    #[test]
    fn every_fixture_decodes_to_its_expected_json() {
        let cases = [
            ("plain", SecurityLevel::None),
            ("plain-small", SecurityLevel::None),
            ("alltypes", SecurityLevel::None),
            ("notif-okay", SecurityLevel::None),
            ("notif-failure-nohost", SecurityLevel::None),
            ("sign", SecurityLevel::Sign),
            ("encrypt", SecurityLevel::Encrypt),
        ];
        let c = creds("fixture-secret");
        for (name, level) in cases {
            let got = decode_all(&fixture(&format!("{name}.bin")), level, &c).unwrap();
            let text = crate::test_fixtures::text(&format!("{name}.expected.json"));
            let expected: Vec<Json> = serde_json::from_str(&text).unwrap();
            assert_eq!(got.len(), expected.len(), "{name}");
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                let mut e = e.clone();
                // `time` is derived from `time_hr`; compare the exact field.
                e.as_object_mut().unwrap().remove("time");
                assert_eq!(to_json(g), e, "{name} item {i}");
            }
        }
    }

    #[test]
    fn security_levels_apply_as_collectd_applies_them() {
        let (plain, sign, encrypt) = (
            fixture("plain.bin"),
            fixture("sign.bin"),
            fixture("encrypt.bin"),
        );
        let good = creds("fixture-secret");
        let wrong = creds("wrong");
        use SecurityLevel::*;
        // none: plain and signed (unchecked) pass, encrypted is dropped.
        assert_eq!(
            decode_all(&plain, None, &Credentials::default())
                .unwrap()
                .len(),
            29
        );
        let s = decode_all(&sign, None, &Credentials::default()).unwrap();
        assert!(s.len() == 28 && s.iter().all(|d| d.security == Security::None));
        assert_eq!(
            decode_all(&encrypt, None, &good),
            Err(DecodeError::EncryptedAtNone)
        );
        // sign: plain refused, signature checked, encrypted decrypted.
        assert_eq!(
            decode_all(&plain, Sign, &good),
            Err(DecodeError::Unsigned(Sign))
        );
        assert_eq!(
            decode_all(&sign, Sign, &wrong),
            Err(DecodeError::BadSignature("fixture-user".into()))
        );
        assert_eq!(
            decode_all(&sign, Sign, &Credentials::default()),
            Err(DecodeError::UnknownUser("fixture-user".into()))
        );
        assert_eq!(decode_all(&encrypt, Sign, &good).unwrap().len(), 29);
        // encrypt: only encrypted data.
        assert_eq!(
            decode_all(&sign, Encrypt, &good),
            Err(DecodeError::Unsigned(Encrypt))
        );
        assert_eq!(
            decode_all(&encrypt, Encrypt, &wrong),
            Err(DecodeError::BadChecksum("fixture-user".into()))
        );
    }

    fn part(t: u16, body: &[u8]) -> Vec<u8> {
        let mut p = t.to_be_bytes().to_vec();
        p.extend(((body.len() + 4) as u16).to_be_bytes());
        p.extend(body);
        p
    }

    fn decode_none(bytes: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
        decode_all(bytes, SecurityLevel::None, &Credentials::default())
    }

    #[test]
    fn every_part_type_and_field_carry_over() {
        let mut d = Vec::new();
        d.extend(part(HOST, b"h\0"));
        d.extend(part(TIME, &10u64.to_be_bytes()));
        d.extend(part(INTERVAL, &2u64.to_be_bytes()));
        d.extend(part(PLUGIN, b"p\0"));
        d.extend(part(PLUGIN_INSTANCE, b"pi\0"));
        d.extend(part(TYPE, b"t\0"));
        d.extend(part(TYPE_INSTANCE, b"\0"));
        d.extend(part(0x7777, b"unknown parts are skipped"));
        let mut values = 4u16.to_be_bytes().to_vec();
        values.extend([0, 1, 2, 3]);
        values.extend(7u64.to_be_bytes());
        values.extend(1.5f64.to_le_bytes());
        values.extend((-3i64).to_be_bytes());
        values.extend(9u64.to_be_bytes());
        d.extend(part(VALUES, &values));
        d.extend(part(TIME_HR, &(5u64 << 30).to_be_bytes()));
        d.extend(part(INTERVAL_HR, &(1u64 << 29).to_be_bytes()));
        d.extend(part(VALUES, &0u16.to_be_bytes()));
        d.extend(part(SEVERITY, &2u64.to_be_bytes()));
        d.extend(part(MESSAGE, b"disk full\0"));
        let out = decode_none(&d).unwrap();
        assert_eq!(out.len(), 3);
        let Item::Values { fields, samples } = &out[0].item else {
            panic!()
        };
        assert_eq!(
            (
                fields.host.as_str(),
                fields.plugin_instance.as_str(),
                fields.type_instance.as_str()
            ),
            ("h", "pi", "")
        );
        assert_eq!((fields.time_hr, fields.interval_hr), (10 << 30, 2 << 30));
        assert_eq!(
            samples,
            &vec![
                Sample::Counter(7),
                Sample::Gauge(1.5),
                Sample::Derive(-3),
                Sample::Absolute(9)
            ]
        );
        let Item::Values { fields, samples } = &out[1].item else {
            panic!()
        };
        assert!(
            samples.is_empty(),
            "a 0-value list decodes (and is dropped later by types.db)"
        );
        assert_eq!((fields.time_hr, fields.interval_hr), (5 << 30, 1 << 29));
        assert!(
            matches!(&out[2].item, Item::Notification { severity: 2, message, .. } if message == "disk full")
        );
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let host = part(HOST, b"h\0");
        assert_eq!(
            decode_none(&host[..3]),
            Err(DecodeError::TruncatedHeader { offset: 0 })
        );
        let mut lying = host.clone();
        lying[3] = 200;
        assert!(matches!(
            decode_none(&lying),
            Err(DecodeError::LengthTooLong {
                length: 200,
                left: 6,
                ..
            })
        ));
        lying[3] = 2;
        assert!(matches!(
            decode_none(&lying),
            Err(DecodeError::BadLength { length: 2, .. })
        ));
        assert!(matches!(
            decode_none(&part(HOST, b"no nul")),
            Err(DecodeError::BadString { .. })
        ));
        assert!(matches!(
            decode_none(&part(HOST, b"")),
            Err(DecodeError::BadString { .. })
        ));
        assert!(matches!(
            decode_none(&part(TIME, &[1, 2, 3])),
            Err(DecodeError::BadLength { .. })
        ));
        let mut v = 2u16.to_be_bytes().to_vec();
        v.extend([1, 1]);
        v.extend(1.0f64.to_le_bytes());
        assert!(
            matches!(
                decode_none(&part(VALUES, &v)),
                Err(DecodeError::BadLength { .. })
            ),
            "count lies"
        );
        let mut v = 1u16.to_be_bytes().to_vec();
        v.push(9);
        v.extend(1.0f64.to_le_bytes());
        assert_eq!(
            decode_none(&part(VALUES, &v)),
            Err(DecodeError::BadDsType {
                offset: 0,
                ds_type: 9
            })
        );
        // Items before the error are kept.
        let mut out = Vec::new();
        let mut d = part(TYPE, b"t\0");
        d.extend(part(VALUES, &0u16.to_be_bytes()));
        d.extend([0, 1]);
        assert!(decode(&d, SecurityLevel::None, &Credentials::default(), &mut out).is_err());
        assert_eq!(out.len(), 1);
        // Truncated signature and encryption parts.
        assert!(
            decode_all(
                &part(SIGN_SHA256, &[0; 10]),
                SecurityLevel::Sign,
                &creds("x")
            )
            .is_err()
        );
        assert!(
            decode_all(
                &part(ENCR_AES256, &[0, 50, 1]),
                SecurityLevel::Encrypt,
                &creds("x")
            )
            .is_err()
        );
        let enc = fixture("encrypt.bin");
        for cut in [1, 7, 30, 100, enc.len() - 1] {
            assert!(
                decode_all(
                    &enc[..cut],
                    SecurityLevel::Encrypt,
                    &creds("fixture-secret")
                )
                .is_err()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            for level in [SecurityLevel::None, SecurityLevel::Sign, SecurityLevel::Encrypt] {
                let mut out = Vec::new();
                let _ = decode(&bytes, level, &creds("fixture-secret"), &mut out);
            }
        }

        #[test]
        fn mutated_fixtures_never_panic(i in 0usize..1378, b in proptest::num::u8::ANY, cut in 0usize..1400) {
            for name in ["plain.bin", "sign.bin", "encrypt.bin", "alltypes.bin"] {
                let mut bytes = fixture(name);
                let i = i % bytes.len();
                bytes[i] = b;
                bytes.truncate(cut.max(1));
                for level in [SecurityLevel::None, SecurityLevel::Sign, SecurityLevel::Encrypt] {
                    let mut out = Vec::new();
                    let _ = decode(&bytes, level, &creds("fixture-secret"), &mut out);
                }
            }
        }
    }
}
