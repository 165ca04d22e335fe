//! What collectd says back (`collectd -T` output, errors) is masked before it leaves medic:
//! passwords, secrets, keys and URL credentials in any line that names one.

/// Words that mark a config line or message as carrying a secret: collectd's own option names
/// (`Password`, `SecurityLevel`'s `AuthFile`, SNMP's `Community`, `AuthPassphrase`,
/// `PrivacyPassphrase`, write_http's `Header "Authorization: …"`, `Token`s), matched anywhere in
/// a word, case aside.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passphrase",
    "passwd",
    "secret",
    "key",
    "community",
    "token",
    "authorization",
    "credential",
    "auth",
    "bearer",
    "cookie",
];

/// What a replacement says back, made safe to send: collectd's parser echoes characters it
/// cannot read and quotes the text it failed on, from the submitted config or from any file it
/// `Include`s (`/etc/shadow`). So: the text after a word of `SECRET_WORDS` is masked, the
/// fragment after `near` is masked, credentials in URLs are masked, and characters echoed
/// before a line's first word (the lexer's) are dropped.
pub(super) fn redact(output: &str) -> String {
    output
        .lines()
        .map(|line| line.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|line| !line.is_empty())
        .map(|line| mask_url_credentials(&mask_near(&mask_secret_value(line))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `… Password "x"` → `… Password ****`: everything after the first secret word.
fn mask_secret_value(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let Some(at) = SECRET_WORDS
        .iter()
        .filter_map(|w| lower.find(w).map(|i| i + w.len()))
        .min()
    else {
        return line.to_string();
    };
    // The rest of the word (`Passwords`, `KeyFile`), then the value.
    let rest = &line[at..];
    let word_end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let (name, value) = line.split_at(at + word_end);
    if value
        .trim_matches(|c: char| c.is_whitespace() || c == ':')
        .is_empty()
    {
        line.to_string()
    } else {
        format!("{name} ****")
    }
}

/// collectd's parser: `… near `<text>': syntax error` → `near `****'`.
fn mask_near(line: &str) -> String {
    let Some(at) = line.find("near `") else {
        return line.to_string();
    };
    let open = at + "near `".len();
    let close = line[open..].find('\'').map_or(line.len(), |i| open + i);
    format!("{}****{}", &line[..open], &line[close..])
}

/// `scheme://user:pass@host` → `scheme://****@host`.
fn mask_url_credentials(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("****");
                rest = &after[userinfo_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}
