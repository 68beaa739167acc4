//! The safety net of the steps that cannot be undone (deleting a
//! certificate, unpairing a handset, removing a disk's old token): at a
//! terminal the person confirms, `--yes` skips the question, and without
//! a terminal (a script, a pipe) and without `--yes` the step is refused.

use std::io::{self, BufRead, IsTerminal, Write};

use crate::failure::{Failure, io_failure};

/// What confirms a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirm<'a> {
    /// `y` or `yes`.
    YesNo,
    /// The name typed exactly, for the steps with the widest effect.
    TypeName(&'a str),
}

impl Confirm<'_> {
    fn question(&self) -> String {
        match self {
            Confirm::YesNo => "Go ahead? [y/N] ".into(),
            Confirm::TypeName(name) => format!("Type '{name}' to confirm: "),
        }
    }

    /// Whether `answer` (a line as typed) confirms.
    pub(crate) fn accepts(&self, answer: &str) -> bool {
        let a = answer.trim_end_matches(['\r', '\n']);
        match self {
            Confirm::YesNo => matches!(a.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
            Confirm::TypeName(name) => a.trim() == *name,
        }
    }
}

/// Asks before `what` (e.g. "delete the certificate 02 from phone/web"),
/// unless `yes`. Stdin must be a terminal to ask on.
pub(crate) fn confirm(what: &str, how: Confirm<'_>, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !io::stdin().is_terminal() {
        return Err(Failure::Usage(format!(
            "refusing to {what} without confirmation: it cannot be undone, and stdin is not a \
             terminal to ask on; pass --yes to go ahead"
        )));
    }
    let mut err = io::stderr().lock();
    write!(
        err,
        "phonecsp: about to {what}; this cannot be undone.\n{}",
        how.question()
    )
    .and_then(|()| err.flush())
    .map_err(|e| io_failure("writing to the terminal", e))?;
    drop(err);
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| io_failure("reading the terminal", e))?;
    if how.accepts(&line) {
        Ok(())
    } else {
        Err(Failure::Failed(format!("not confirmed: did not {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clear_answer_confirms() {
        let yn = Confirm::YesNo;
        for a in ["y\n", "Y\n", "yes\n", " yes \r\n"] {
            assert!(yn.accepts(a), "{a:?}");
        }
        for a in ["", "\n", "n\n", "no\n", "yess\n", "sure\n"] {
            assert!(!yn.accepts(a), "{a:?}");
        }
        let name = Confirm::TypeName("pixel");
        assert!(name.accepts("pixel\n"));
        assert!(!name.accepts("y\n"));
        assert!(!name.accepts("Pixel\n"));
        assert!(!name.accepts("pixe\n"));
        assert!(!name.accepts(""));
    }
}
