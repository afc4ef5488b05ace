//! Reading inputs: files, mbox, Maildir folders.
