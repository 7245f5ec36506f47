//! The sample data the services start with. Public so gateway tests can
//! assert against it instead of repeating magic strings.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Every demo user's password. Kept so a `POST /login` can check it.
pub const DEMO_PASSWORD: &str = "zimmart";

/// A fixed demo exchange rate (ZWG per USD, in tenths) so prices are stable;
/// a real catalogue would read the Reserve Bank's daily rate.
const ZWG_PER_USD_TENTHS: u64 = 268;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: &'static str,
    pub username: &'static str,
    /// Plain text because this is a demo; never serialized.
    #[serde(skip)]
    pub password: &'static str,
    pub name: &'static str,
    pub email: &'static str,
    pub phone: &'static str,
    pub role: &'static str,
    pub city: &'static str,
    pub member_since: &'static str,
}

pub const USERS: &[User] = &[
    User {
        id: "u-0001",
        username: "admin",
        password: DEMO_PASSWORD,
        name: "ZimMart Admin",
        email: "admin@zimmart.co.zw",
        phone: "+263 242 700 100",
        role: "admin",
        city: "Harare",
        member_since: "2024-03-01",
    },
    User {
        id: "u-1001",
        username: "tendai",
        password: DEMO_PASSWORD,
        name: "Tendai Moyo",
        email: "tendai@zimmart.co.zw",
        phone: "+263 77 412 3123",
        role: "customer",
        city: "Harare",
        member_since: "2024-06-14",
    },
    User {
        id: "u-1002",
        username: "rudo",
        password: DEMO_PASSWORD,
        name: "Rudo Chikore",
        email: "rudo.chikore@gmail.com",
        phone: "+263 71 855 0942",
        role: "customer",
        city: "Bulawayo",
        member_since: "2025-01-22",
    },
    User {
        id: "u-1003",
        username: "farai",
        password: DEMO_PASSWORD,
        name: "Farai Ndlovu",
        email: "farai.ndlovu@outlook.com",
        phone: "+263 78 230 6611",
        role: "customer",
        city: "Mutare",
        member_since: "2025-09-03",
    },
];

pub fn user_by_id(id: &str) -> Option<&'static User> {
    USERS.iter().find(|u| u.id == id)
}

pub fn user_by_username(username: &str) -> Option<&'static User> {
    USERS.iter().find(|u| u.username == username)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    pub id: u64,
    pub name: String,
    pub category: String,
    pub price_usd_cents: u64,
    pub price_zwg_cents: u64,
    pub stock: u32,
}

impl Product {
    pub fn new(id: u64, name: &str, category: &str, price_usd_cents: u64, stock: u32) -> Self {
        Product {
            id,
            name: name.to_owned(),
            category: category.to_owned(),
            price_usd_cents,
            price_zwg_cents: usd_to_zwg_cents(price_usd_cents),
            stock,
        }
    }
}

pub fn usd_to_zwg_cents(usd_cents: u64) -> u64 {
    usd_cents * ZWG_PER_USD_TENTHS / 10
}

/// The catalogue the product service starts with.
pub fn seed_products() -> Vec<Product> {
    vec![
        Product::new(1, "Mazoe Orange Crush 2L", "beverages", 450, 120),
        Product::new(2, "Tanganda Tea 100 bags", "beverages", 320, 85),
        Product::new(3, "Gold Leaf Roller Meal 10kg", "groceries", 850, 200),
        Product::new(4, "Olivine Cooking Oil 2L", "groceries", 520, 64),
        Product::new(5, "Dairibord Chimombe Milk 1L", "dairy", 165, 40),
        Product::new(6, "Samsung Galaxy A16 128GB", "electronics", 18900, 7),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderItem {
    pub product_id: u64,
    pub name: String,
    pub quantity: u32,
    pub unit_price_usd_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub items: Vec<OrderItem>,
    pub total_usd_cents: u64,
    pub status: String,
    pub created_at: String,
}

impl Order {
    pub fn new(id: &str, user_id: &str, items: Vec<OrderItem>, status: &str, at: &str) -> Self {
        let total_usd_cents = items
            .iter()
            .map(|i| i.unit_price_usd_cents * u64::from(i.quantity))
            .sum();
        Order {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
            items,
            total_usd_cents,
            status: status.to_owned(),
            created_at: at.to_owned(),
        }
    }
}

/// An order line priced from the seed catalogue, as the order service
/// snapshots prices at checkout.
pub fn order_item(product_id: u64, quantity: u32) -> Option<OrderItem> {
    let p = seed_products().into_iter().find(|p| p.id == product_id)?;
    Some(OrderItem {
        product_id,
        name: p.name,
        quantity,
        unit_price_usd_cents: p.price_usd_cents,
    })
}

pub fn seed_orders() -> Vec<Order> {
    let item = |id, qty| order_item(id, qty).expect("seed orders use seed products");
    vec![
        Order::new(
            "ord-5001",
            "u-1001",
            vec![item(3, 1), item(4, 2)],
            "delivered",
            "2026-01-09T08:14:00Z",
        ),
        Order::new(
            "ord-5002",
            "u-1001",
            vec![item(6, 1)],
            "shipped",
            "2026-02-02T17:41:00Z",
        ),
        Order::new(
            "ord-5003",
            "u-1001",
            vec![item(1, 3), item(2, 1), item(5, 2)],
            "pending",
            "2026-02-11T06:05:00Z",
        ),
        Order::new(
            "ord-5004",
            "u-1002",
            vec![item(3, 2)],
            "delivered",
            "2026-01-28T12:30:00Z",
        ),
    ]
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PaymentMethod {
    Ecocash {
        id: &'static str,
        phone_masked: &'static str,
        is_default: bool,
    },
    Innbucks {
        id: &'static str,
        wallet_masked: &'static str,
        is_default: bool,
    },
    Visa {
        id: &'static str,
        cardholder: &'static str,
        last4: &'static str,
        exp_month: u8,
        exp_year: u16,
        is_default: bool,
    },
}

/// Saved payment methods by user id. Numbers are stored masked: the demo
/// never holds a real phone number or PAN.
pub fn payment_methods(user_id: &str) -> Vec<PaymentMethod> {
    match user_id {
        "u-1001" => vec![
            PaymentMethod::Ecocash {
                id: "pm-ecocash-1001",
                phone_masked: "+263 77* *** 123",
                is_default: true,
            },
            PaymentMethod::Innbucks {
                id: "pm-innbucks-1001",
                wallet_masked: "IB-****-7741",
                is_default: false,
            },
            PaymentMethod::Visa {
                id: "pm-visa-1001",
                cardholder: "TENDAI MOYO",
                last4: "4242",
                exp_month: 9,
                exp_year: 2028,
                is_default: false,
            },
        ],
        "u-1002" => vec![PaymentMethod::Ecocash {
            id: "pm-ecocash-1002",
            phone_masked: "+263 71* *** 942",
            is_default: true,
        }],
        "u-1003" => vec![PaymentMethod::Visa {
            id: "pm-visa-1003",
            cardholder: "FARAI NDLOVU",
            last4: "0317",
            exp_month: 3,
            exp_year: 2027,
            is_default: true,
        }],
        _ => Vec::new(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: &'static str,
    #[serde(skip)]
    pub user_id: &'static str,
    pub channel: &'static str,
    pub title: &'static str,
    pub body: &'static str,
    pub read: bool,
    pub created_at: &'static str,
}

pub const NOTIFICATIONS: &[Notification] = &[
    Notification {
        id: "n-9001",
        user_id: "u-1001",
        channel: "sms",
        title: "Order delivered",
        body: "ZimMart: order ord-5001 was delivered to Avondale, Harare. Ndatenda!",
        read: true,
        created_at: "2026-01-10T14:02:00Z",
    },
    Notification {
        id: "n-9002",
        user_id: "u-1001",
        channel: "email",
        title: "Your phone is on its way",
        body: "Order ord-5002 (Samsung Galaxy A16) has shipped with ZimPost Courier.",
        read: false,
        created_at: "2026-02-03T09:15:00Z",
    },
    Notification {
        id: "n-9003",
        user_id: "u-1001",
        channel: "push",
        title: "Payment pending",
        body: "Approve the EcoCash prompt on +263 77* *** 123 to confirm order ord-5003.",
        read: false,
        created_at: "2026-02-11T06:06:00Z",
    },
    Notification {
        id: "n-9004",
        user_id: "u-1001",
        channel: "push",
        title: "Weekend special",
        body: "Mazoe Orange Crush 2L is 10% off this weekend only.",
        read: false,
        created_at: "2026-02-13T07:00:00Z",
    },
    Notification {
        id: "n-9005",
        user_id: "u-1002",
        channel: "sms",
        title: "Order delivered",
        body: "ZimMart: order ord-5004 was delivered to Suburbs, Bulawayo.",
        read: true,
        created_at: "2026-01-30T11:45:00Z",
    },
];

pub fn notifications_for(user_id: &str) -> impl Iterator<Item = &'static Notification> {
    NOTIFICATIONS.iter().filter(move |n| n.user_id == user_id)
}

/// Current UTC time as RFC 3339, without pulling in a date crate.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil-date algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_by_id_and_username() {
        let tendai = user_by_id("u-1001").unwrap();
        assert_eq!(tendai.name, "Tendai Moyo");
        assert_eq!(tendai.email, "tendai@zimmart.co.zw");
        assert_eq!(user_by_username("admin").unwrap().role, "admin");
        assert!(user_by_id("u-404").is_none());
        assert!(USERS.iter().all(|u| u.password == DEMO_PASSWORD));
    }

    #[test]
    fn password_is_never_serialized() {
        let json = serde_json::to_string(user_by_id("u-1001").unwrap()).unwrap();
        assert!(!json.contains("password"), "{json}");
    }

    #[test]
    fn seed_orders_total_their_items() {
        let orders = seed_orders();
        let first = &orders[0];
        assert_eq!(first.total_usd_cents, 850 + 2 * 520);
        assert!(orders.iter().all(|o| user_by_id(&o.user_id).is_some()));
    }

    #[test]
    fn zwg_prices_follow_the_demo_rate() {
        assert_eq!(usd_to_zwg_cents(100), 2680);
        assert_eq!(seed_products()[0].price_zwg_cents, 12_060);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(now_rfc3339().len(), "2026-01-01T00:00:00Z".len());
    }
}
