//! `phonecsp generate`: the shell completions and the man pages, made from
//! the same clap definitions as `--help`, so they cannot drift from it.
//! Hidden: it is for `scripts/install` and packagers, not for daily use.

use std::io::{self, Write};

use clap::CommandFactory;

use crate::args::{Cli, GenerateCommand};
use crate::failure::{Failure, io_failure};

pub(crate) fn run(g: &GenerateCommand) -> Result<(), Failure> {
    match g {
        GenerateCommand::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "phonecsp", &mut out);
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .map_err(|e| io_failure("writing to stdout", e))
        }
        GenerateCommand::Man { dir } => {
            let what = || format!("writing the man pages into {}", dir.display());
            std::fs::create_dir_all(dir).map_err(|e| io_failure(&what(), e))?;
            clap_mangen::generate_to(Cli::command(), dir).map_err(|e| io_failure(&what(), e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_for_the_command_and_its_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        run(&GenerateCommand::Man {
            dir: dir.path().join("man1"),
        })
        .unwrap();
        let page = |name: &str| {
            std::fs::read_to_string(dir.path().join("man1").join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let main = page("phonecsp.1");
        assert!(main.contains(".TH phonecsp 1"), "{main}");
        assert!(
            main.contains("PHONECSP_PIN"),
            "the environment is documented"
        );
        assert!(page("phonecsp-sign.1").contains(".TH phonecsp-sign 1"));
        assert!(page("phonecsp-cert-delete.1").contains("\\-\\-yes"));
        // The hidden subcommand has no page.
        assert!(!dir.path().join("man1/phonecsp-generate.1").exists());
    }
}
