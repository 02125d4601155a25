//! Sections of the page that the runtime does not know about: a [`Panel`] is a titled table the
//! application (or another crate, such as the cluster's nodes view) supplies, shown below the
//! tree and sent with every frame.

use serde::Serialize;

/// A section of the observer page: a titled table, read once per frame.
///
/// `table` is called on the task that builds the frame, every
/// [`ObserverOptions::interval`](super::ObserverOptions::interval) for every connected page, so
/// it must be cheap and must not block: a panel whose data needs I/O (a database query) keeps a
/// copy refreshed in the background and returns that copy.
///
/// ```
/// use crashonly::observer::{ObserverOptions, Panel, Table};
///
/// struct Build;
/// impl Panel for Build {
///     fn table(&self) -> Table {
///         Table::new("Build", ["version", "profile"])
///             .with_row([env!("CARGO_PKG_VERSION"), if cfg!(debug_assertions) { "debug" } else { "release" }])
///     }
/// }
///
/// let opts = ObserverOptions::default().with_panel(Build);
/// assert_eq!(opts.panels[0].table().rows.len(), 1);
/// ```
pub trait Panel: Send + Sync + 'static {
    /// The table as it is now.
    fn table(&self) -> Table;
}

/// What a [`Panel`] shows: a title, column names, rows of text, and an optional line below.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Table {
    /// The section's heading.
    pub title: String,
    /// The column names.
    pub columns: Vec<String>,
    /// The rows, each as many cells as there are columns (shorter rows are padded by the page).
    pub rows: Vec<Vec<String>>,
    /// A line shown below the table (a summary, or why it is empty or stale).
    pub note: Option<String>,
}

impl Table {
    /// A table with a title and column names, and no rows yet.
    pub fn new<C: Into<String>>(title: impl Into<String>, columns: impl IntoIterator<Item = C>) -> Self {
        Table {
            title: title.into(),
            columns: columns.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
            note: None,
        }
    }

    /// Adds a row.
    pub fn with_row<C: Into<String>>(mut self, cells: impl IntoIterator<Item = C>) -> Self {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the line shown below the table.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}
