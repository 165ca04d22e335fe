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

use crate::{
    Identifier, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_VALUES, Notification, Record, Sample, Severity,
    ValueList,
};

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

/// What a receiver accepts, as collectd's `SecurityLevel` option of the network plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum SecurityLevel {
    /// Plain and signed data (signatures unchecked); encrypted data is dropped.
    #[default]
    None,
    /// Signed (verified) and encrypted data; plain data is refused.
    Sign,
    /// Encrypted data only.
    Encrypt,
}

impl SecurityLevel {
    /// Every level, in collectd's order.
    pub const ALL: [SecurityLevel; 3] = [
        SecurityLevel::None,
        SecurityLevel::Sign,
        SecurityLevel::Encrypt,
    ];

    /// collectd's spelling: `none`, `sign`, `encrypt`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityLevel::None => "none",
            SecurityLevel::Sign => "sign",
            SecurityLevel::Encrypt => "encrypt",
        }
    }
}

impl std::str::FromStr for SecurityLevel {
    type Err = String;

    /// collectd's spelling, in any case.
    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("`{text}` is not a security level (none, sign, encrypt)"))
    }
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
    #[error(
        "part 0x{part:04x} at offset {offset} is {length} bytes long; at most {max} are allowed"
    )]
    TooLong {
        part: u16,
        offset: usize,
        length: usize,
        max: usize,
    },
    #[error("values part at offset {offset} has {count} values; at most {max} are allowed", max = MAX_VALUES)]
    TooManyValues { offset: usize, count: usize },
    #[error(
        "signature or encryption part at offset {offset} inside signed or encrypted data (collectd sends one layer)"
    )]
    Nested { offset: usize },
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

impl DecodeError {
    /// A short fixed label for metrics: what an operator does about it differs by reason
    /// (fix a sender's config, a password, or look for an attacker), not by offset.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Unsigned(_) => "unsigned",
            DecodeError::EncryptedAtNone => "encrypted_at_none",
            DecodeError::UnknownUser(_) => "unknown_user",
            DecodeError::BadSignature(_) => "bad_signature",
            DecodeError::BadChecksum(_) => "decrypt_failed",
            _ => "malformed",
        }
    }
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
    .packet(datagram, 0, Security::None, 0)
}

struct Parser<'a> {
    level: SecurityLevel,
    credentials: &'a Credentials,
    out: &'a mut Vec<Decoded>,
}

impl Parser<'_> {
    /// `base` is the offset of `buf` in the datagram, for messages; `layers` how many
    /// signature or encryption parts enclose `buf` (a second one is refused: no recursion
    /// deeper than one layer, whatever a datagram holds).
    fn packet(
        &mut self,
        buf: &[u8],
        base: usize,
        security: Security,
        layers: u8,
    ) -> Result<(), DecodeError> {
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
            if matches!(part, ENCR_AES256 | SIGN_SHA256) && layers > 0 {
                return Err(DecodeError::Nested { offset });
            }
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
        let string = |max: usize| -> Result<String, DecodeError> {
            if body.len() > max + 1 {
                return Err(DecodeError::TooLong {
                    part,
                    offset,
                    length: body.len() - 1,
                    max,
                });
            }
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
            HOST => fields.host = string(MAX_NAME_LEN)?,
            PLUGIN => fields.plugin = string(MAX_NAME_LEN)?,
            PLUGIN_INSTANCE => fields.plugin_instance = string(MAX_NAME_LEN)?,
            TYPE => fields.type_ = string(MAX_NAME_LEN)?,
            TYPE_INSTANCE => fields.type_instance = string(MAX_NAME_LEN)?,
            TIME => fields.time_hr = number()?.saturating_mul(1 << 30),
            TIME_HR => fields.time_hr = number()?,
            INTERVAL => fields.interval_hr = number()?.saturating_mul(1 << 30),
            INTERVAL_HR => fields.interval_hr = number()?,
            SEVERITY => *severity = number()?,
            MESSAGE => {
                let message = string(MAX_MESSAGE_LEN)?;
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
            return self.packet(rest, rest_base, security, 1);
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
        self.packet(rest, rest_base, security, 1)
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
        self.packet(payload, payload_base, Security::Encrypted, 1)
    }
}

fn values(body: &[u8], offset: usize) -> Result<Vec<Sample>, DecodeError> {
    let bad = || DecodeError::BadLength {
        part: VALUES,
        offset,
        length: body.len() + 4,
    };
    let count = u16::from_be_bytes(body.get(0..2).ok_or_else(bad)?.try_into().unwrap()) as usize;
    if count > MAX_VALUES {
        return Err(DecodeError::TooManyValues { offset, count });
    }
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

impl Item {
    /// Into the data model: a value list needs a host, plugin and type; a notification a
    /// severity collectd defines. `now_ns` stands in for a time the datagram did not carry.
    pub fn into_record(self, now_ns: u64) -> Result<Record, String> {
        let (fields, rest) = match self {
            Item::Values { fields, samples } => (fields, Ok(samples)),
            Item::Notification {
                fields,
                severity,
                message,
            } => (fields, Err((severity, message))),
        };
        let time = if fields.time_hr == 0 {
            now_ns
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
                Ok(Record::Values(ValueList {
                    identifier,
                    time,
                    interval: cdtime_to_ns(fields.interval_hr),
                    samples,
                }))
            }
            Err((severity, message)) => {
                let severity = Severity::from_code(severity)
                    .ok_or_else(|| format!("notification with unknown severity {severity}"))?;
                Ok(Record::Notification(Notification {
                    severity,
                    time,
                    message,
                    identifier,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests;
