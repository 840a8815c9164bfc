//! Text handling shared by the providers: which alphabet a message needs on the wire.

/// The GSM 03.38 default alphabet, indexed by its 7-bit code. 0x1B is the escape to the
/// extension table, not a character of its own.
pub const GSM7_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The GSM 03.38 extension table (each sent as escape + one code, counting two).
pub const GSM7_EXTENSION: [char; 10] = ['\u{c}', '^', '{', '}', '\\', '[', '~', ']', '|', '€'];

/// Whether `text` can go as a plain GSM-7 SMS; otherwise it needs `type=unicode`.
pub fn is_gsm7(text: &str) -> bool {
    text.chars()
        .all(|c| c != '\u{1b}' && (GSM7_BASIC.contains(&c) || GSM7_EXTENSION.contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_tables_hold_every_character_once() {
        let mut all: Vec<char> = GSM7_BASIC.iter().chain(&GSM7_EXTENSION).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 128 + 10);
        assert_eq!(GSM7_BASIC[0x00], '@');
        assert_eq!(GSM7_BASIC[0x1C], 'Æ');
        assert_eq!(GSM7_BASIC[0x40], '¡');
        assert_eq!(GSM7_BASIC[0x60], '¿');
        assert_eq!(GSM7_BASIC[0x7F], 'à');
    }

    #[test]
    fn gsm7_accepts_both_tables_and_refuses_the_rest() {
        assert!(is_gsm7("Your code is 123456. Valid 5 min; é è à ñ Ø ß Δ Ω"));
        assert!(is_gsm7("{[~^|\\]} cost 5€\u{c}"));
        assert!(is_gsm7(""));
        // pt_BR: ó and á are not in GSM 03.38 (ò and à are), nor is lower-case ç.
        assert!(!is_gsm7("Seu código SMS é 123456 e válido por 5 minutos."));
        assert!(!is_gsm7("ç"));
        assert!(!is_gsm7("`"));
        assert!(!is_gsm7("🙂"));
        assert!(!is_gsm7("\u{1b}"), "the escape alone is no character");
        assert!(!is_gsm7("\t"));
    }
}
