//! Which breach each input belongs to: one named breach for every input, or
//! a `--breaches` TOML file of `[[breach]]` tables that list their files.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, ServerError, io_err};
use crate::index::build::InputSpec;
use crate::index::format::BreachMeta;

/// Breach metadata plus the input files that belong to it, as written in a
/// `--breaches` TOML file.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct BreachFileEntry {
    /// The metadata.
    #[serde(flatten)]
    pub(crate) meta: BreachMeta,
    /// Input files of this breach (matched by path or file name).
    #[serde(default)]
    pub(crate) files: Vec<PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
struct BreachFile {
    breach: Vec<BreachFileEntry>,
}

/// The breach table and the inputs tagged with their breach: from a
/// `--breaches` file if given, else one breach called `breach` (default
/// `"breach"`) that every input belongs to.
///
/// # Errors
///
/// I/O or TOML errors reading the breaches file, or an input no breach lists.
pub fn plan_inputs(
    inputs: &[PathBuf],
    breaches_file: Option<&Path>,
    breach: Option<&str>,
) -> Result<(Vec<BreachMeta>, Vec<InputSpec>)> {
    if let Some(path) = breaches_file {
        let entries = load_breaches(path)?;
        let inputs = assign_inputs(inputs, &entries)?;
        return Ok((entries.into_iter().map(|e| e.meta).collect(), inputs));
    }
    let id = breach.unwrap_or("breach").to_owned();
    let meta = BreachMeta {
        name: id.clone(),
        id,
        ..Default::default()
    };
    let inputs = inputs
        .iter()
        .map(|p| InputSpec {
            path: p.clone(),
            breach: 0,
        })
        .collect();
    Ok((vec![meta], inputs))
}

/// Reads a `--breaches` file.
///
/// # Errors
///
/// I/O or TOML errors.
pub(crate) fn load_breaches(path: &Path) -> Result<Vec<BreachFileEntry>> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let parsed: BreachFile = toml::from_str(&text)
        .map_err(|e| ServerError::Input(format!("{}: {e}", path.display())))?;
    Ok(parsed.breach)
}

/// Assigns each input to its breach by path or file name.
///
/// # Errors
///
/// [`ServerError::Input`] naming an input no breach lists.
pub(crate) fn assign_inputs(
    inputs: &[PathBuf],
    breaches: &[BreachFileEntry],
) -> Result<Vec<InputSpec>> {
    inputs
        .iter()
        .map(|path| {
            let name = path.file_name();
            breaches
                .iter()
                .position(|b| {
                    b.files.iter().any(|f| {
                        f == path || (f.components().count() == 1 && f.file_name() == name)
                    })
                })
                .map(|breach| InputSpec {
                    path: path.clone(),
                    breach,
                })
                .ok_or_else(|| {
                    ServerError::Input(format!(
                        "{}: no breach in the --breaches file lists this input",
                        path.display()
                    ))
                })
        })
        .collect()
}
