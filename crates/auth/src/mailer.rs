//! E-mail delivery: GoTrue's templates (confirmation, magic link, recovery, invite, e-mail
//! change, reauthentication), rendered in the request and handed to a bounded queue; a
//! background task sends them over SMTP (`lettre`, STARTTLS or implicit TLS through rustls)
//! with bounded retries and exponential backoff, so a slow or failing SMTP server never holds
//! an HTTP answer.
//!
//! Templates use GoTrue's variables (`{{ .ConfirmationURL }}`, `{{ .Token }}`,
//! `{{ .TokenHash }}`, `{{ .SiteURL }}`, `{{ .Email }}`, `{{ .NewEmail }}`, `{{ .SendingTo }}`,
//! `{{ .RedirectTo }}`, `{{ .Data }}` and `{{ .Data.<key> }}`), HTML-escaped in bodies. Built-in
//! defaults, or files named by `GOTRUE_MAILER_TEMPLATES_<TYPE>`; subjects by
//! `GOTRUE_MAILER_SUBJECTS_<TYPE>`. Other Go template actions (`if`, `range`...) are refused at
//! start, naming the setting.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SmtpTls {
    /// GoTrue's behaviour: implicit TLS on port 465, else STARTTLS when the server offers it.
    Auto,
    /// STARTTLS, required (a server that does not offer it is an error, never plain text).
    Starttls,
    /// Implicit TLS (SMTPS) from the first byte, whatever the port.
    Tls,
    /// Plain text: only for a relay on the same host or a trusted network.
    None,
}

/// SMTP and template settings, under GoTrue's names (`AGENCYFLOW_SMTP_*` where GoTrue has none).
#[derive(Debug, Clone, clap::Args)]
pub struct SmtpArgs {
    /// SMTP server: e-mails (sign-up confirmation, magic links, recovery, invites, e-mail
    /// changes, reauthentication codes) are sent through it. Unset: nothing is mailed (links
    /// come from the admin API's generate_link).
    #[arg(long = "smtp-host", env = "GOTRUE_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port (465 means implicit TLS with AGENCYFLOW_SMTP_TLS=auto).
    #[arg(long = "smtp-port", env = "GOTRUE_SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,
    /// SMTP user name (AUTH PLAIN/LOGIN); none: no authentication.
    #[arg(long = "smtp-user", env = "GOTRUE_SMTP_USER")]
    pub smtp_user: Option<String>,
    /// SMTP password.
    #[arg(long = "smtp-pass", env = "GOTRUE_SMTP_PASS", hide_env_values = true)]
    pub smtp_pass: Option<String>,
    /// The From address of every e-mail (required with GOTRUE_SMTP_HOST).
    #[arg(long = "smtp-admin-email", env = "GOTRUE_SMTP_ADMIN_EMAIL")]
    pub smtp_admin_email: Option<String>,
    /// The From name of every e-mail.
    #[arg(long = "smtp-sender-name", env = "GOTRUE_SMTP_SENDER_NAME")]
    pub smtp_sender_name: Option<String>,
    /// Transport security: auto (465: implicit TLS, else STARTTLS when offered), starttls
    /// (required), tls (implicit), none (plain text, local relays only).
    #[arg(
        long = "smtp-tls",
        env = "AGENCYFLOW_SMTP_TLS",
        value_enum,
        default_value = "auto"
    )]
    pub smtp_tls: SmtpTls,
    /// Seconds one delivery attempt may take (connect, TLS, the whole SMTP exchange).
    #[arg(long = "smtp-timeout", env = "AGENCYFLOW_SMTP_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub smtp_timeout: u64,
    /// Attempts per e-mail before it is given up (temporary failures and timeouts are
    /// retried; a permanent 5xx refusal is not).
    #[arg(long = "smtp-max-attempts", env = "AGENCYFLOW_SMTP_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub smtp_max_attempts: u32,
    /// Milliseconds before the first retry; each later one waits twice as long (at most
    /// 5 minutes).
    #[arg(long = "smtp-retry-backoff-ms", env = "AGENCYFLOW_SMTP_RETRY_BACKOFF_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub smtp_retry_backoff_ms: u64,
    /// E-mail changes need the link or code sent to the current address and the one sent to
    /// the new address (GoTrue's secure e-mail change).
    #[arg(long = "mailer-secure-email-change-enabled", env = "GOTRUE_MAILER_SECURE_EMAIL_CHANGE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub secure_email_change_enabled: bool,
    /// Template file (HTML) of the sign-up confirmation e-mail.
    #[arg(
        long = "mailer-templates-confirmation",
        env = "GOTRUE_MAILER_TEMPLATES_CONFIRMATION"
    )]
    pub templates_confirmation: Option<String>,
    /// Template file of the magic-link e-mail.
    #[arg(
        long = "mailer-templates-magic-link",
        env = "GOTRUE_MAILER_TEMPLATES_MAGIC_LINK"
    )]
    pub templates_magic_link: Option<String>,
    /// Template file of the password-recovery e-mail.
    #[arg(
        long = "mailer-templates-recovery",
        env = "GOTRUE_MAILER_TEMPLATES_RECOVERY"
    )]
    pub templates_recovery: Option<String>,
    /// Template file of the invitation e-mail.
    #[arg(
        long = "mailer-templates-invite",
        env = "GOTRUE_MAILER_TEMPLATES_INVITE"
    )]
    pub templates_invite: Option<String>,
    /// Template file of the e-mail-change e-mails.
    #[arg(
        long = "mailer-templates-email-change",
        env = "GOTRUE_MAILER_TEMPLATES_EMAIL_CHANGE"
    )]
    pub templates_email_change: Option<String>,
    /// Template file of the reauthentication-code e-mail.
    #[arg(
        long = "mailer-templates-reauthentication",
        env = "GOTRUE_MAILER_TEMPLATES_REAUTHENTICATION"
    )]
    pub templates_reauthentication: Option<String>,
    /// Subject of the sign-up confirmation e-mail (a template).
    #[arg(
        long = "mailer-subjects-confirmation",
        env = "GOTRUE_MAILER_SUBJECTS_CONFIRMATION"
    )]
    pub subjects_confirmation: Option<String>,
    /// Subject of the magic-link e-mail.
    #[arg(
        long = "mailer-subjects-magic-link",
        env = "GOTRUE_MAILER_SUBJECTS_MAGIC_LINK"
    )]
    pub subjects_magic_link: Option<String>,
    /// Subject of the password-recovery e-mail.
    #[arg(
        long = "mailer-subjects-recovery",
        env = "GOTRUE_MAILER_SUBJECTS_RECOVERY"
    )]
    pub subjects_recovery: Option<String>,
    /// Subject of the invitation e-mail.
    #[arg(long = "mailer-subjects-invite", env = "GOTRUE_MAILER_SUBJECTS_INVITE")]
    pub subjects_invite: Option<String>,
    /// Subject of the e-mail-change e-mails.
    #[arg(
        long = "mailer-subjects-email-change",
        env = "GOTRUE_MAILER_SUBJECTS_EMAIL_CHANGE"
    )]
    pub subjects_email_change: Option<String>,
    /// Subject of the reauthentication-code e-mail.
    #[arg(
        long = "mailer-subjects-reauthentication",
        env = "GOTRUE_MAILER_SUBJECTS_REAUTHENTICATION"
    )]
    pub subjects_reauthentication: Option<String>,
}

impl SmtpArgs {
    /// `true` when e-mails are sent.
    pub fn enabled(&self) -> bool {
        self.host().is_some()
    }

    fn host(&self) -> Option<&str> {
        self.smtp_host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
    }

    /// Checks the settings (the From address, the templates), naming the setting at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        Templates::load(self)?;
        if self.enabled() {
            self.sender_mailbox()?;
            if self.smtp_port == 0 {
                return Err(("GOTRUE_SMTP_PORT", "must be 1 to 65535".into()));
            }
            if self.smtp_pass.as_deref().is_some_and(|p| !p.is_empty())
                && self.smtp_user.as_deref().is_none_or(|u| u.is_empty())
            {
                return Err((
                    "GOTRUE_SMTP_USER",
                    "is required with GOTRUE_SMTP_PASS".into(),
                ));
            }
        }
        Ok(())
    }

    fn sender_mailbox(&self) -> Result<Mailbox, (&'static str, String)> {
        let email = self
            .smtp_admin_email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .ok_or((
                "GOTRUE_SMTP_ADMIN_EMAIL",
                "is required with GOTRUE_SMTP_HOST (the From address)".to_string(),
            ))?;
        let address = email
            .parse()
            .map_err(|e| ("GOTRUE_SMTP_ADMIN_EMAIL", format!("{email:?}: {e}")))?;
        let name = self
            .smtp_sender_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        Ok(Mailbox::new(name, address))
    }
}

/// The kinds of e-mail, as GoTrue names their templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Confirmation,
    MagicLink,
    Recovery,
    Invite,
    EmailChange,
    Reauthentication,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Confirmation,
        Kind::MagicLink,
        Kind::Recovery,
        Kind::Invite,
        Kind::EmailChange,
        Kind::Reauthentication,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Confirmation => "confirmation",
            Kind::MagicLink => "magic_link",
            Kind::Recovery => "recovery",
            Kind::Invite => "invite",
            Kind::EmailChange => "email_change",
            Kind::Reauthentication => "reauthentication",
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    fn default_subject(self) -> &'static str {
        match self {
            Kind::Confirmation => "Confirm your email address",
            Kind::MagicLink => "Your sign-in link",
            Kind::Recovery => "Reset your password",
            Kind::Invite => "You've been invited",
            Kind::EmailChange => "Confirm your email change",
            Kind::Reauthentication => "{{ .Token }} is your verification code",
        }
    }

    fn default_body(self) -> &'static str {
        match self {
            Kind::Confirmation => {
                "<h2>Confirm your email address</h2>\n\
                 <p>Follow the link below to confirm this email address and finish signing up.</p>\n\
                 <p><a href=\"{{ .ConfirmationURL }}\">Confirm email address</a></p>\n\
                 <p>Or enter this code: {{ .Token }}</p>\n"
            }
            Kind::MagicLink => {
                "<h2>Your sign-in link</h2>\n\
                 <p>Follow the link below to sign in. It expires shortly and can only be used once.</p>\n\
                 <p><a href=\"{{ .ConfirmationURL }}\">Sign in</a></p>\n\
                 <p>Or enter this code: {{ .Token }}</p>\n"
            }
            Kind::Recovery => {
                "<h2>Reset your password</h2>\n\
                 <p>We received a request to reset your password. Follow the link below to choose a new one.</p>\n\
                 <p><a href=\"{{ .ConfirmationURL }}\">Reset password</a></p>\n\
                 <p>Or enter this code: {{ .Token }}</p>\n\
                 <p>If you didn't request this, you can safely ignore this email.</p>\n"
            }
            Kind::Invite => {
                "<h2>You've been invited</h2>\n\
                 <p>You've been invited to create an account on {{ .SiteURL }}. Follow the link below to accept.</p>\n\
                 <p><a href=\"{{ .ConfirmationURL }}\">Accept invitation</a></p>\n\
                 <p>Or enter this code: {{ .Token }}</p>\n"
            }
            Kind::EmailChange => {
                "<h2>Confirm your email change</h2>\n\
                 <p>Follow the link below to confirm the change of the email address of your account from {{ .Email }} to {{ .NewEmail }}.</p>\n\
                 <p><a href=\"{{ .ConfirmationURL }}\">Confirm email change</a></p>\n\
                 <p>Or enter this code: {{ .Token }}</p>\n\
                 <p>If you didn't request this change, you can safely ignore this email.</p>\n"
            }
            Kind::Reauthentication => {
                "<h2>Your verification code</h2>\n\
                 <p>Use the code below to verify your identity. It expires shortly.</p>\n\
                 <p>{{ .Token }}</p>\n"
            }
        }
    }

    fn body_setting(self) -> &'static str {
        match self {
            Kind::Confirmation => "GOTRUE_MAILER_TEMPLATES_CONFIRMATION",
            Kind::MagicLink => "GOTRUE_MAILER_TEMPLATES_MAGIC_LINK",
            Kind::Recovery => "GOTRUE_MAILER_TEMPLATES_RECOVERY",
            Kind::Invite => "GOTRUE_MAILER_TEMPLATES_INVITE",
            Kind::EmailChange => "GOTRUE_MAILER_TEMPLATES_EMAIL_CHANGE",
            Kind::Reauthentication => "GOTRUE_MAILER_TEMPLATES_REAUTHENTICATION",
        }
    }

    fn subject_setting(self) -> &'static str {
        match self {
            Kind::Confirmation => "GOTRUE_MAILER_SUBJECTS_CONFIRMATION",
            Kind::MagicLink => "GOTRUE_MAILER_SUBJECTS_MAGIC_LINK",
            Kind::Recovery => "GOTRUE_MAILER_SUBJECTS_RECOVERY",
            Kind::Invite => "GOTRUE_MAILER_SUBJECTS_INVITE",
            Kind::EmailChange => "GOTRUE_MAILER_SUBJECTS_EMAIL_CHANGE",
            Kind::Reauthentication => "GOTRUE_MAILER_SUBJECTS_REAUTHENTICATION",
        }
    }

    fn settings(self, a: &SmtpArgs) -> (Option<&String>, Option<&String>) {
        match self {
            Kind::Confirmation => (
                a.templates_confirmation.as_ref(),
                a.subjects_confirmation.as_ref(),
            ),
            Kind::MagicLink => (
                a.templates_magic_link.as_ref(),
                a.subjects_magic_link.as_ref(),
            ),
            Kind::Recovery => (a.templates_recovery.as_ref(), a.subjects_recovery.as_ref()),
            Kind::Invite => (a.templates_invite.as_ref(), a.subjects_invite.as_ref()),
            Kind::EmailChange => (
                a.templates_email_change.as_ref(),
                a.subjects_email_change.as_ref(),
            ),
            Kind::Reauthentication => (
                a.templates_reauthentication.as_ref(),
                a.subjects_reauthentication.as_ref(),
            ),
        }
    }
}

/// The values of an e-mail's template variables.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub confirmation_url: String,
    pub token: String,
    pub token_hash: String,
    pub site_url: String,
    pub email: String,
    pub new_email: String,
    pub sending_to: String,
    pub redirect_to: String,
    pub data: Value,
}

impl Vars {
    fn lookup(&self, path: &[String]) -> String {
        let plain = |s: &String| s.clone();
        match path.first().map(String::as_str) {
            Some("ConfirmationURL") => plain(&self.confirmation_url),
            Some("Token") => plain(&self.token),
            Some("TokenHash") => plain(&self.token_hash),
            Some("SiteURL") => plain(&self.site_url),
            Some("Email") => plain(&self.email),
            Some("NewEmail") => plain(&self.new_email),
            Some("SendingTo") => plain(&self.sending_to),
            Some("RedirectTo") => plain(&self.redirect_to),
            Some("Data") => {
                let mut v = &self.data;
                for k in &path[1..] {
                    v = v.get(k).unwrap_or(&Value::Null);
                }
                match v {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            }
            _ => String::new(),
        }
    }
}

const VARIABLES: [&str; 9] = [
    "ConfirmationURL",
    "Token",
    "TokenHash",
    "SiteURL",
    "Email",
    "NewEmail",
    "SendingTo",
    "RedirectTo",
    "Data",
];

#[derive(Debug, Clone)]
enum Seg {
    Lit(String),
    Var(Vec<String>),
}

/// A parsed template: literal text and `{{ .Variable }}` substitutions.
#[derive(Debug, Clone)]
pub struct Template(Vec<Seg>);

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut segs = Vec::new();
        let mut rest = src;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segs.push(Seg::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| "a `{{` without its `}}`".to_string())?;
            let action = after[..close]
                .trim_matches(|c: char| c.is_whitespace() || c == '-')
                .to_string();
            let path = action
                .strip_prefix('.')
                .filter(|p| !p.is_empty())
                .map(|p| p.split('.').map(str::to_string).collect::<Vec<_>>())
                .filter(|p| {
                    VARIABLES.contains(&p[0].as_str())
                        && (p.len() == 1 || p[0] == "Data")
                        && p.iter().all(|k| {
                            !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_')
                        })
                })
                .ok_or_else(|| {
                    format!(
                        "unsupported template action `{{{{ {action} }}}}`: only variables are \
                         supported ({})",
                        VARIABLES.map(|v| format!("{{{{ .{v} }}}}")).join(", ")
                    )
                })?;
            segs.push(Seg::Var(path));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            segs.push(Seg::Lit(rest.to_string()));
        }
        Ok(Template(segs))
    }

    /// Renders with the values HTML-escaped (`html`) or as they are (subjects).
    pub fn render(&self, vars: &Vars, html: bool) -> String {
        let mut out = String::new();
        for s in &self.0 {
            match s {
                Seg::Lit(l) => out.push_str(l),
                Seg::Var(p) => {
                    let v = vars.lookup(p);
                    if html {
                        escape_html(&v, &mut out)
                    } else {
                        out.extend(v.chars().filter(|c| !c.is_control()))
                    }
                }
            }
        }
        out
    }
}

fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Every kind's subject and body.
#[derive(Debug, Clone)]
pub struct Templates {
    subjects: Vec<Template>,
    bodies: Vec<Template>,
}

impl Templates {
    /// The built-in templates, replaced by the configured files and subjects.
    pub fn load(a: &SmtpArgs) -> Result<Templates, (&'static str, String)> {
        let mut subjects = Vec::new();
        let mut bodies = Vec::new();
        for k in Kind::ALL {
            let (file, subject) = k.settings(a);
            let body_src = match file.map(|f| f.trim()).filter(|f| !f.is_empty()) {
                Some(f) => {
                    let path = f.strip_prefix("file://").unwrap_or(f);
                    if path.starts_with("http://") || path.starts_with("https://") {
                        return Err((
                            k.body_setting(),
                            format!("{f}: templates are read from files, not fetched from URLs"),
                        ));
                    }
                    std::fs::read_to_string(path)
                        .map_err(|e| (k.body_setting(), format!("reading {path}: {e}")))?
                }
                None => k.default_body().to_string(),
            };
            let subject_src = subject
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .unwrap_or(k.default_subject());
            bodies.push(Template::parse(&body_src).map_err(|e| (k.body_setting(), e))?);
            subjects.push(Template::parse(subject_src).map_err(|e| (k.subject_setting(), e))?);
        }
        Ok(Templates { subjects, bodies })
    }

    /// `(subject, html body)` of an e-mail.
    pub fn render(&self, kind: Kind, vars: &Vars) -> (String, String) {
        (
            self.subjects[kind.index()].render(vars, false),
            self.bodies[kind.index()].render(vars, true),
        )
    }
}

/// An e-mail waiting for delivery.
#[derive(Debug)]
struct Outgoing {
    to: String,
    subject: String,
    html: String,
    kind: Kind,
}

/// How many e-mails may wait for delivery; past that new ones are dropped (and logged).
const QUEUE: usize = 10_000;
/// E-mails being delivered (or waiting between attempts) at once.
const CONCURRENT: usize = 4;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

struct Worker {
    rx: mpsc::Receiver<Outgoing>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
    max_attempts: u32,
    backoff: Duration,
}

/// The SMTP queue: `send` never waits for the server.
pub struct SmtpMailer {
    tx: mpsc::Sender<Outgoing>,
    /// Started on the first e-mail (the state may be built outside the async runtime).
    worker: Mutex<Option<Worker>>,
}

impl SmtpMailer {
    fn new(a: &SmtpArgs) -> Result<Option<SmtpMailer>, (&'static str, String)> {
        let Some(host) = a.host() else {
            return Ok(None);
        };
        let from = a.sender_mailbox()?;
        let params = || {
            TlsParameters::new(host.to_string())
                .map_err(|e| ("GOTRUE_SMTP_HOST", format!("TLS for {host}: {e}")))
        };
        let tls = match a.smtp_tls {
            SmtpTls::Auto if a.smtp_port == 465 => Tls::Wrapper(params()?),
            SmtpTls::Auto => Tls::Opportunistic(params()?),
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
            SmtpTls::None => Tls::None,
        };
        let timeout = Duration::from_secs(a.smtp_timeout);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(a.smtp_port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(user) = a.smtp_user.as_deref().filter(|u| !u.is_empty()) {
            builder = builder.credentials(Credentials::new(
                user.to_string(),
                a.smtp_pass.clone().unwrap_or_default(),
            ));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(Some(SmtpMailer {
            tx,
            worker: Mutex::new(Some(Worker {
                rx,
                transport: builder.build(),
                from,
                timeout,
                max_attempts: a.smtp_max_attempts.max(1),
                backoff: Duration::from_millis(a.smtp_retry_backoff_ms.max(1)),
            })),
        }))
    }

    fn send(&self, m: Outgoing) {
        if let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tokio::spawn(worker.run());
        }
        let (to, kind) = (m.to.clone(), m.kind);
        if let Err(e) = self.tx.try_send(m) {
            tracing::error!(to = %to, kind = kind.as_str(), error = %e, "email dropped: the delivery queue is full or closed");
        }
    }
}

impl Worker {
    async fn run(mut self) {
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        let transport = Arc::new(self.transport);
        while let Some(m) = self.rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let transport = transport.clone();
            let from = self.from.clone();
            let (timeout, attempts, backoff) = (self.timeout, self.max_attempts, self.backoff);
            tokio::spawn(async move {
                let _slot = slot;
                deliver(&transport, from, m, timeout, attempts, backoff).await;
            });
        }
    }
}

/// Sends one e-mail, retrying temporary failures with exponential backoff.
async fn deliver(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    m: Outgoing,
    timeout: Duration,
    max_attempts: u32,
    backoff: Duration,
) {
    let kind = m.kind.as_str();
    let to: Mailbox = match m.to.parse() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(to = %m.to, kind, error = %e, "email not sent: invalid recipient address");
            return;
        }
    };
    let message = match Message::builder()
        .from(from)
        .to(to)
        .subject(m.subject)
        .header(ContentType::TEXT_HTML)
        .body(m.html)
    {
        Ok(msg) => msg,
        Err(e) => {
            tracing::error!(to = %m.to, kind, error = %e, "email not sent: could not build the message");
            return;
        }
    };
    let mut wait = backoff;
    for attempt in 1..=max_attempts {
        let outcome = tokio::time::timeout(timeout, transport.send(message.clone())).await;
        let error = match outcome {
            Ok(Ok(_)) => {
                tracing::info!(to = %m.to, kind, attempt, "email sent");
                return;
            }
            Ok(Err(e)) if e.is_permanent() => {
                tracing::error!(to = %m.to, kind, attempt, error = %e, "email refused by the SMTP server (permanent); not retried");
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", timeout.as_secs()),
        };
        if attempt == max_attempts {
            tracing::error!(to = %m.to, kind, attempts = max_attempts, error = %error, "email given up after its last attempt");
            return;
        }
        tracing::warn!(to = %m.to, kind, attempt, retry_in_ms = wait.as_millis() as u64, error = %error, "email delivery failed; will retry");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// The templates and, when SMTP is configured, the queue.
pub struct Mailer {
    templates: Templates,
    smtp: Option<SmtpMailer>,
}

impl Mailer {
    /// From checked settings ([`SmtpArgs::check`]); a setting that fails here is logged and
    /// the built-in templates (or no SMTP) are used.
    pub fn new(a: &SmtpArgs) -> Mailer {
        let templates = Templates::load(a).unwrap_or_else(|(setting, e)| {
            tracing::error!(setting, error = %e, "mailer: using the built-in templates");
            Templates::load(&SmtpArgs {
                templates_confirmation: None,
                templates_magic_link: None,
                templates_recovery: None,
                templates_invite: None,
                templates_email_change: None,
                templates_reauthentication: None,
                subjects_confirmation: None,
                subjects_magic_link: None,
                subjects_recovery: None,
                subjects_invite: None,
                subjects_email_change: None,
                subjects_reauthentication: None,
                ..a.clone()
            })
            .expect("the built-in templates parse")
        });
        let smtp = SmtpMailer::new(a).unwrap_or_else(|(setting, e)| {
            tracing::error!(setting, error = %e, "mailer: SMTP is not usable; nothing will be mailed");
            None
        });
        Mailer { templates, smtp }
    }

    pub fn enabled(&self) -> bool {
        self.smtp.is_some()
    }

    /// Renders and queues an e-mail; `false` when there is no SMTP server (nothing queued).
    pub fn send(&self, kind: Kind, to: &str, vars: &Vars) -> bool {
        let Some(smtp) = &self.smtp else {
            return false;
        };
        let (subject, html) = self.templates.render(kind, vars);
        smtp.send(Outgoing {
            to: to.to_string(),
            subject,
            html,
            kind,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            confirmation_url: "http://x.test/verify?token=a&type=signup".into(),
            token: "123456".into(),
            token_hash: "abc".into(),
            site_url: "http://app.test".into(),
            email: "a@x.test".into(),
            data: serde_json::json!({"name": "<Ada>", "n": 3}),
            ..Vars::default()
        }
    }

    #[test]
    fn templates_substitute_gotrue_variables_escaped() {
        let t = Template::parse(
            "<a href=\"{{ .ConfirmationURL }}\">go</a> {{.Token}} {{ .Data.name }} {{ .Data.n }} {{ .Data.missing }}!",
        )
        .unwrap();
        assert_eq!(
            t.render(&vars(), true),
            "<a href=\"http://x.test/verify?token=a&amp;type=signup\">go</a> 123456 &lt;Ada&gt; 3 !"
        );
        let s = Template::parse("{{ .Token }} is your code").unwrap();
        assert_eq!(s.render(&vars(), false), "123456 is your code");
    }

    #[test]
    fn unsupported_actions_are_refused() {
        for bad in [
            "{{ if .Token }}x{{ end }}",
            "{{ .Nope }}",
            "{{ .Token.x }}",
            "open {{ .Token",
            "{{ }}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_parse_and_files_override() {
        let dir = tempdir();
        let f = dir.join("invite.html");
        std::fs::write(&f, "Join {{ .SiteURL }}: {{ .ConfirmationURL }}").unwrap();
        let mut a = args();
        a.templates_invite = Some(f.display().to_string());
        a.subjects_invite = Some("Welcome {{ .Email }}".into());
        let t = Templates::load(&a).unwrap();
        let (s, b) = t.render(Kind::Invite, &vars());
        assert_eq!(s, "Welcome a@x.test");
        assert_eq!(
            b,
            "Join http://app.test: http://x.test/verify?token=a&amp;type=signup"
        );
        let (s, b) = t.render(Kind::Reauthentication, &vars());
        assert_eq!(s, "123456 is your verification code");
        assert!(b.contains("123456"));
        a.templates_recovery = Some(dir.join("missing.html").display().to_string());
        assert_eq!(
            Templates::load(&a).unwrap_err().0,
            "GOTRUE_MAILER_TEMPLATES_RECOVERY"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn smtp_needs_a_from_address() {
        let mut a = args();
        a.smtp_host = Some("smtp.example.com".into());
        assert_eq!(a.check().unwrap_err().0, "GOTRUE_SMTP_ADMIN_EMAIL");
        a.smtp_admin_email = Some("not an address".into());
        assert_eq!(a.check().unwrap_err().0, "GOTRUE_SMTP_ADMIN_EMAIL");
        a.smtp_admin_email = Some("auth@example.com".into());
        a.smtp_sender_name = Some("Agency".into());
        assert!(a.check().is_ok());
        assert_eq!(
            a.sender_mailbox().unwrap().to_string(),
            "Agency <auth@example.com>"
        );
    }

    fn args() -> SmtpArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: SmtpArgs,
        }
        P::try_parse_from(["x"]).unwrap().a
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("af-mailer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
