//! The frame every HTML answer shares, error pages included. maud escapes every value
//! interpolated into it.

use maud::{html, Markup, DOCTYPE};

/// Who the header shows as signed in, and the CSRF token its sign-out form carries.
pub struct SignOut<'a> {
    pub user: &'a str,
    pub csrf: &'a str,
}

/// A whole page: head, the site header (with a sign-out form when someone is signed in),
/// and `body`.
pub fn page(title: &str, signed_in: Option<SignOut<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gatehouse" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    h1 { "Gatehouse" }
                    @if let Some(u) = signed_in {
                        form.inline method="post" action="/signout" {
                            "Signed in as " strong { (u.user) } " "
                            input type="hidden" name="csrf" value=(u.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}
