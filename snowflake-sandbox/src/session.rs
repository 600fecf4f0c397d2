//! Users, logins and sessions: password, key-pair JWT (verified against the user's
//! registered public keys, `RSA_PUBLIC_KEY` and `RSA_PUBLIC_KEY_2`), and bearer tokens
//! (OAuth, programmatic access tokens); session tokens and master tokens with their
//! validity, renewal by the master token, and logout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A user of the sandbox and how it may log in.
///
/// ```
/// use snowflake_sandbox::User;
/// let user = User::new("loader")
///     .password("s3cret")
///     .token("PROGRAMMATIC_ACCESS_TOKEN", "pat-123");
/// assert_eq!(user.name(), "LOADER");
/// ```
#[derive(Debug, Clone)]
pub struct User {
    name: String,
    password: Option<String>,
    keys: Vec<String>,
    tokens: Vec<(String, String)>,
}

impl User {
    /// A user named `name` (upper-cased) that cannot log in until given a credential.
    pub fn new(name: &str) -> Self {
        User {
            name: name.to_ascii_uppercase(),
            password: None,
            keys: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Its password.
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// A registered RSA public key (PEM `PUBLIC KEY`): the first is `RSA_PUBLIC_KEY`,
    /// the second `RSA_PUBLIC_KEY_2`. A key-pair login's JWT must name one of them by
    /// fingerprint and be signed by it.
    #[must_use]
    pub fn public_key(mut self, pem: &str) -> Self {
        self.keys.push(pem.to_owned());
        self
    }

    /// A bearer token accepted with `authenticator` (`OAUTH`,
    /// `PROGRAMMATIC_ACCESS_TOKEN`).
    #[must_use]
    pub fn token(mut self, authenticator: &str, token: &str) -> Self {
        self.tokens
            .push((authenticator.to_ascii_uppercase(), token.to_owned()));
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A fresh 2048-bit RSA key pair for key-pair logins, made by the `openssl` command:
/// the private key (unencrypted PKCS#8 PEM) and the public key (PEM) to register with
/// [`User::public_key`].
///
/// # Errors
/// `openssl` is missing or fails.
///
/// ```no_run
/// let (private_pem, public_pem) = snowflake_sandbox::key_pair().unwrap();
/// assert!(private_pem.contains("BEGIN PRIVATE KEY"));
/// assert!(public_pem.contains("BEGIN PUBLIC KEY"));
/// ```
pub fn key_pair() -> std::io::Result<(String, String)> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let private = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .stderr(Stdio::null())
        .output()?;
    if !private.status.success() {
        return Err(std::io::Error::other("openssl genpkey failed"));
    }
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&private.stdout)?;
    }
    let public = child.wait_with_output()?;
    if !public.status.success() {
        return Err(std::io::Error::other("openssl pkey -pubout failed"));
    }
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|_| std::io::Error::other("openssl wrote non-UTF-8"))
    };
    Ok((text(private.stdout)?, text(public.stdout)?))
}

/// A login refused, as Snowflake words it.
#[derive(Debug)]
pub(crate) struct Refused {
    pub code: &'static str,
    pub message: &'static str,
}

fn incorrect() -> Refused {
    Refused {
        code: "390100",
        message: "Incorrect username or password was specified.",
    }
}

fn bad_jwt() -> Refused {
    Refused {
        code: "390144",
        message: "JWT token is invalid.",
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
}

/// `SHA256:` and the base64 SHA-256 of a PEM public key's DER (its SubjectPublicKeyInfo).
pub(crate) fn fingerprint(pem: &str) -> Option<String> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    Some(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    ))
}

/// Check a login request's `data` against the users of `account`; the user's name.
pub(crate) fn verify(account: &str, users: &[User], data: &Value) -> Result<String, Refused> {
    let authenticator = data["AUTHENTICATOR"]
        .as_str()
        .unwrap_or("SNOWFLAKE")
        .to_ascii_uppercase();
    let login = data["LOGIN_NAME"].as_str().unwrap_or_default();
    let account_name = data["ACCOUNT_NAME"].as_str().unwrap_or(account);
    if !account_name.eq_ignore_ascii_case(account) {
        return Err(incorrect());
    }
    match authenticator.as_str() {
        "SNOWFLAKE" => {
            let user = find(users, login)?;
            let given = data["PASSWORD"].as_str().unwrap_or_default();
            match &user.password {
                Some(password) if password == given => Ok(user.name.clone()),
                _ => Err(incorrect()),
            }
        }
        "SNOWFLAKE_JWT" => {
            let user = find(users, login)?;
            let token = data["TOKEN"].as_str().ok_or_else(bad_jwt)?;
            let prefix = format!(
                "{}.{}",
                account.to_ascii_uppercase(),
                user.name.to_ascii_uppercase()
            );
            for pem in &user.keys {
                let Some(fingerprint) = fingerprint(pem) else {
                    continue;
                };
                let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()) else {
                    continue;
                };
                let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                validation.set_required_spec_claims(&["exp", "iss", "sub"]);
                validation.leeway = 60;
                let Ok(decoded) = jsonwebtoken::decode::<Claims>(token, &key, &validation) else {
                    continue;
                };
                if decoded.claims.iss == format!("{prefix}.{fingerprint}")
                    && decoded.claims.sub == prefix
                {
                    return Ok(user.name.clone());
                }
            }
            Err(bad_jwt())
        }
        other => {
            let token = data["TOKEN"].as_str().unwrap_or_default();
            let accepts = |u: &User| {
                u.tokens
                    .iter()
                    .any(|(a, t)| a.as_str() == other && t.as_str() == token)
            };
            users
                .iter()
                .filter(|u| login.is_empty() || u.name.eq_ignore_ascii_case(login))
                .find(|u| accepts(u))
                .map(|u| u.name.clone())
                .ok_or(Refused {
                    code: "390303",
                    message: "Invalid OAuth access token.",
                })
        }
    }
}

fn find<'a>(users: &'a [User], login: &str) -> Result<&'a User, Refused> {
    users
        .iter()
        .find(|u| u.name.eq_ignore_ascii_case(login))
        .ok_or_else(incorrect)
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub id: u64,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub warehouse: Option<String>,
    pub role: Option<String>,
    pub parameters: Map<String, Value>,
    token: String,
    token_expires: Instant,
    master: String,
    master_expires: Instant,
}

/// Why a token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// No `Authorization: Snowflake Token="…"` header.
    Missing,
    /// The session token expired: renew it (390112).
    Expired,
    /// The master token expired: log in again (390114).
    MasterExpired,
    /// Not a token of a live session (390111).
    Gone,
}

/// The sessions of the sandbox.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    next_id: u64,
    by_id: HashMap<u64, Session>,
    tokens: HashMap<String, u64>,
    masters: HashMap<String, u64>,
}

fn new_token(kind: &str) -> String {
    use rand::Rng as _;
    let bytes: [u8; 24] = rand::rng().random();
    format!(
        "sandbox-{kind}-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// New session and master tokens with their validity.
pub(crate) struct Issued {
    pub session_id: u64,
    pub token: String,
    pub master: String,
}

impl Sessions {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        &mut self,
        database: Option<String>,
        schema: Option<String>,
        warehouse: Option<String>,
        role: Option<String>,
        parameters: Map<String, Value>,
        validity: Duration,
        master_validity: Duration,
    ) -> Issued {
        self.next_id += 1;
        let id = self.next_id;
        let now = Instant::now();
        let session = Session {
            id,
            database,
            schema,
            warehouse,
            role,
            parameters,
            token: new_token("session"),
            token_expires: now + validity,
            master: new_token("master"),
            master_expires: now + master_validity,
        };
        let issued = Issued {
            session_id: id,
            token: session.token.clone(),
            master: session.master.clone(),
        };
        self.tokens.insert(session.token.clone(), id);
        self.masters.insert(session.master.clone(), id);
        self.by_id.insert(id, session);
        issued
    }

    /// The session of a session token.
    pub(crate) fn check(&self, token: Option<&str>) -> Result<&Session, TokenError> {
        let token = token.ok_or(TokenError::Missing)?;
        let id = self.tokens.get(token).ok_or(TokenError::Gone)?;
        let session = self.by_id.get(id).ok_or(TokenError::Gone)?;
        if Instant::now() >= session.token_expires {
            return Err(TokenError::Expired);
        }
        Ok(session)
    }

    /// New tokens for the session of `master` whose session token was `old`.
    pub(crate) fn renew(
        &mut self,
        master: Option<&str>,
        old: &str,
        validity: Duration,
    ) -> Result<(String, u64), TokenError> {
        let master = master.ok_or(TokenError::Missing)?;
        let id = *self.masters.get(master).ok_or(TokenError::Gone)?;
        let session = self.by_id.get_mut(&id).ok_or(TokenError::Gone)?;
        if Instant::now() >= session.master_expires {
            return Err(TokenError::MasterExpired);
        }
        if session.token != old {
            return Err(TokenError::Gone);
        }
        self.tokens.remove(&session.token);
        session.token = new_token("session");
        session.token_expires = Instant::now() + validity;
        self.tokens.insert(session.token.clone(), id);
        Ok((session.token.clone(), id))
    }

    /// Close the session of `token`.
    pub(crate) fn close(&mut self, token: &str) -> bool {
        let Some(id) = self.tokens.remove(token) else {
            return false;
        };
        if let Some(session) = self.by_id.remove(&id) {
            self.masters.remove(&session.master);
        }
        true
    }

    /// Every session token expires now (master tokens still renew them).
    pub(crate) fn expire_all(&mut self) {
        let now = Instant::now();
        for session in self.by_id.values_mut() {
            session.token_expires = now;
        }
    }

    /// Every master token expires now: the next renewal needs a new login.
    pub(crate) fn expire_masters(&mut self) {
        let now = Instant::now();
        for session in self.by_id.values_mut() {
            session.master_expires = now;
            session.token_expires = now;
        }
    }

    /// A copy of session `id` (its context only, blank when it is gone).
    pub(crate) fn snapshot(&self, id: u64) -> Session {
        self.by_id.get(&id).cloned().unwrap_or_else(|| Session {
            id,
            database: None,
            schema: None,
            warehouse: None,
            role: None,
            parameters: Map::new(),
            token: String::new(),
            token_expires: Instant::now(),
            master: String::new(),
            master_expires: Instant::now(),
        })
    }

    /// Session `id`, to change its context or parameters.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Session> {
        self.by_id.get_mut(&id)
    }

    /// Live sessions.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_session_keeps_its_id_and_the_old_token_stops_working() {
        let mut sessions = Sessions::default();
        let issued = sessions.open(
            None,
            None,
            None,
            None,
            Map::new(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        sessions.expire_all();
        assert_eq!(
            sessions.check(Some(&issued.token)).unwrap_err(),
            TokenError::Expired
        );
        let (token, id) = sessions
            .renew(Some(&issued.master), &issued.token, Duration::from_secs(60))
            .unwrap();
        assert_eq!(id, issued.session_id);
        assert_eq!(sessions.check(Some(&token)).unwrap().id, id);
        assert_eq!(
            sessions.check(Some(&issued.token)).unwrap_err(),
            TokenError::Gone
        );
        sessions.expire_masters();
        assert_eq!(
            sessions
                .renew(Some(&issued.master), &token, Duration::from_secs(60))
                .unwrap_err(),
            TokenError::MasterExpired
        );
    }

    #[test]
    fn a_wrong_password_and_an_unknown_user_read_the_same() {
        let users = [User::new("loader").password("right")];
        let login = |user: &str, password: &str| {
            verify(
                "ACME",
                &users,
                &serde_json::json!({"LOGIN_NAME": user, "PASSWORD": password, "ACCOUNT_NAME": "acme"}),
            )
        };
        assert_eq!(login("LOADER", "right").unwrap(), "LOADER");
        assert_eq!(login("loader", "wrong").unwrap_err().code, "390100");
        assert_eq!(login("nobody", "right").unwrap_err().code, "390100");
    }
}
