//! The console's actions — re-run a run from its failure, mark a job of it succeeded — for
//! the callers a configured allow-list names (operators), each after a confirmation page, and
//! recorded in the run log with who did it (by the CLI's own core functions,
//! [`conveyor_core::steps::rerun_by`] and [`conveyor_core::steps::mark_success`]).
//!
//! Who calls is [`Identify`]'s answer: behind Identity-Aware Proxy, the e-mail of IAP's signed
//! assertion (`conveyor-gcp`'s `iap::IapVerifier`, wired by the console service); under
//! `conveyor dev`, the local user. A caller who is not on the list gets 403, one nobody
//! identified 401; a form posted from another site (its `Origin` is not this host) is refused
//! too. The list names e-mails, `@domain`s and Google groups (`group:ops@example.com`, asked
//! of [`Groups`]).

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use conveyor_core::names::RunId;
use conveyor_core::steps::{self, Context, StepError};

/// Why a request names no caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unidentified {
    /// No identity, or one that does not verify: 401.
    Nobody(String),
    /// The identity cannot be checked now (the key server is unreachable): 503.
    Unavailable(String),
}

/// Who is calling.
#[async_trait]
pub trait Identify: Send + Sync {
    /// The caller's e-mail (or name), or why the request names nobody.
    async fn caller(&self, headers: &HeaderMap) -> Result<String, Unidentified>;
}

/// Membership of Google groups, for the `group:` entries of the operator list.
#[async_trait]
pub trait Groups: Send + Sync {
    /// Whether `email` is a member of the group `group` (its e-mail).
    ///
    /// # Errors
    /// When membership cannot be checked now (the directory is unreachable, refuses the
    /// console's identity): the action answers 503.
    async fn is_member(&self, group: &str, email: &str) -> Result<bool, String>;
}

/// Everyone is this one caller: `conveyor dev`, on the operator's own machine.
pub struct Fixed(pub String);

#[async_trait]
impl Identify for Fixed {
    async fn caller(&self, _: &HeaderMap) -> Result<String, Unidentified> {
        Ok(self.0.clone())
    }
}

/// Why an action was not done.
#[derive(Debug)]
pub enum ActError {
    /// The request cannot be done (the run is open, no such job): 409 with the reason.
    Refused(String),
    /// Something failed on the way (the run log, the bus): 503.
    Failed(String),
}

/// What an operator asks for, on one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-run `run` from job `from` (else from its failed job).
    Rerun {
        /// The run.
        run: String,
        /// The job to start again from.
        from: Option<String>,
    },
    /// Record job `job` of `run` as succeeded, for `reason`.
    MarkSuccess {
        /// The run.
        run: String,
        /// The job.
        job: String,
        /// Why (recorded in the run log).
        reason: String,
    },
}

impl Action {
    /// The run it is on.
    pub fn run(&self) -> &str {
        match self {
            Self::Rerun { run, .. } | Self::MarkSuccess { run, .. } => run,
        }
    }
}

/// What the actions do.
#[async_trait]
pub trait Act: Send + Sync {
    /// Does `action`, asked for by `by`; the outcome's summary.
    async fn act(&self, action: &Action, by: &str) -> Result<String, ActError>;
}

/// The actions on a runtime's context: the CLI's core functions.
pub struct Steps(pub Context);

fn act_error(e: StepError) -> ActError {
    match e {
        StepError::Rejected(why) => ActError::Refused(why),
        other => ActError::Failed(other.to_string()),
    }
}

#[async_trait]
impl Act for Steps {
    async fn act(&self, action: &Action, by: &str) -> Result<String, ActError> {
        let run = RunId::parse(action.run())
            .map_err(|e| ActError::Refused(format!("not a run id: {e}")))?;
        let done = match action {
            Action::Rerun { from, .. } => {
                steps::rerun_by(&self.0, &run, from.as_deref(), Some(by)).await
            }
            Action::MarkSuccess { job, reason, .. } => {
                steps::mark_success(&self.0, &run, job, reason, by).await
            }
        };
        done.map(|o| o.summary).map_err(act_error)
    }
}

/// Who may act, how they are known, and what acting does.
#[derive(Clone)]
pub struct Operators {
    identify: Arc<dyn Identify>,
    allowed: Vec<String>,
    groups: Option<Arc<dyn Groups>>,
    act: Arc<dyn Act>,
}

/// The prefix of a Google group on the operator list.
pub const GROUP: &str = "group:";

impl Operators {
    /// `allowed`: e-mails (any case; `user:alice@example.com` as IAM writes them too),
    /// `@example.com` for a whole domain, or `group:ops@example.com` for the members of a
    /// Google group (see [`Self::with_groups`]).
    pub fn new(identify: Arc<dyn Identify>, allowed: Vec<String>, act: Arc<dyn Act>) -> Self {
        Self {
            identify,
            allowed: allowed
                .into_iter()
                .map(|a| a.trim().to_ascii_lowercase())
                .map(|a| a.strip_prefix("user:").map(str::to_owned).unwrap_or(a))
                .filter(|a| !a.is_empty())
                .collect(),
            groups: None,
            act,
        }
    }

    /// These operators with the `group:` entries checked by `groups`; without it a group
    /// entry admits nobody, and a caller matched by no other entry gets 503.
    #[must_use]
    pub fn with_groups(mut self, groups: Arc<dyn Groups>) -> Self {
        self.groups = Some(groups);
        self
    }

    /// The Google groups of the list (their e-mails).
    pub fn group_entries(&self) -> impl Iterator<Item = &str> {
        self.allowed.iter().filter_map(|a| a.strip_prefix(GROUP))
    }

    /// Whether `caller` is on the list: by e-mail or domain first, then by membership of
    /// each group in turn.
    ///
    /// # Errors
    /// When only a group could admit the caller and its membership cannot be checked now.
    pub async fn allows(&self, caller: &str) -> Result<bool, String> {
        let caller = caller.to_ascii_lowercase();
        if self
            .allowed
            .iter()
            .filter(|a| !a.starts_with(GROUP))
            .any(|a| *a == caller || (a.starts_with('@') && caller.ends_with(a.as_str())))
        {
            return Ok(true);
        }
        let mut unchecked = None;
        for group in self.group_entries() {
            let Some(groups) = &self.groups else {
                unchecked = Some(format!(
                    "the operator list names {GROUP}{group}, and this console checks no groups"
                ));
                continue;
            };
            match groups.is_member(group, &caller).await {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => unchecked = Some(format!("membership of {group}: {e}")),
            }
        }
        unchecked.map_or(Ok(false), Err)
    }

    /// The caller of `headers`, once identified and allowed.
    pub(crate) async fn operator(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        if let (Some(origin), Some(host)) = (headers.get("origin"), headers.get("host")) {
            let origin = origin.to_str().unwrap_or("");
            let host = host.to_str().unwrap_or("");
            let origin_host = origin.split("://").nth(1).unwrap_or(origin);
            if origin_host != host {
                return Err(Refusal::Forbidden(format!(
                    "a form posted from {origin}, not from this console"
                )));
            }
        }
        let caller = self.identify.caller(headers).await.map_err(|u| match u {
            Unidentified::Nobody(w) => Refusal::Unauthenticated(w),
            Unidentified::Unavailable(w) => Refusal::Unavailable(w),
        })?;
        match self.allows(&caller).await {
            Ok(true) => Ok(caller),
            Ok(false) => Err(Refusal::Forbidden(format!(
                "{caller} is not an operator of this console"
            ))),
            Err(e) => Err(Refusal::Unavailable(format!(
                "cannot tell whether {caller} is an operator: {e}"
            ))),
        }
    }

    pub(crate) fn act(&self) -> &dyn Act {
        self.act.as_ref()
    }
}

/// A caller the actions refuse.
pub(crate) enum Refusal {
    Unauthenticated(String),
    Forbidden(String),
    Unavailable(String),
}
