// pam-bindings declares libpam's functions; the module links against it.
fn main() {
    println!("cargo:rustc-link-lib=pam");
}
