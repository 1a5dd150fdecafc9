//! Harness for velo's end-to-end tests (`tests/tests/e2e/`), which drive the real binaries.
