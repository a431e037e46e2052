//! What the guest is doing with their message (the act): asking, telling news, thanking,
//! reporting a problem, complaining, or raising something urgent, from cue phrases per
//! language.
//!
//! Owns the cue lists and the one order in which they decide: urgent, then problem, then
//! complaint, then question or request, then thanks; anything else is a statement. A
//! problem outranks a question on purpose: "the wifi doesn't work, what's the password?"
//! needs a person, not the password again. Must not: know about topics.

use serde::{Deserialize, Serialize};

use super::text::{self, Text};

/// A message of at most this many words, with no other cue, is a request ("wifi code").
const SHORT_REQUEST_WORDS: usize = 4;

/// The message's main act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    /// A question or a request ("what's the wifi?", "please send the address").
    Question,
    /// News ("we arrive at 6").
    Statement,
    /// Thanks or feedback ("the wifi works great, thanks").
    Thanks,
    /// Something does not work ("the wifi keeps dropping").
    Problem,
    Complaint,
    Urgent,
}

impl Act {
    pub fn as_str(self) -> &'static str {
        match self {
            Act::Question => "question",
            Act::Statement => "statement",
            Act::Thanks => "thanks",
            Act::Problem => "problem",
            Act::Complaint => "complaint",
            Act::Urgent => "urgent",
        }
    }

    /// Every act, for parsing labels.
    pub const ALL: [Act; 6] = [
        Act::Question,
        Act::Statement,
        Act::Thanks,
        Act::Problem,
        Act::Complaint,
        Act::Urgent,
    ];

    pub fn parse(s: &str) -> Option<Act> {
        Act::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Cue phrases of one language.
struct Cues {
    lang: &'static str,
    /// Words that make a question when they begin a clause ("what", "wo", "où").
    starts: &'static [&'static str],
    /// Phrases that make a request anywhere ("could you", "por favor").
    requests: &'static [&'static str],
    problems: &'static [&'static str],
    complaints: &'static [&'static str],
    thanks: &'static [&'static str],
    urgent: &'static [&'static str],
}

const CUES: [Cues; 7] = [
    Cues {
        lang: "en",
        starts: &["what", "whats", "when", "where", "wheres", "how", "which", "who", "is there", "are there", "is it", "is the", "are we", "can", "could", "would", "do", "does", "may", "will", "any", "anything", "wondering", "pls", "please", "need"],
        requests: &["please", "pls", "plz", "could you", "can you", "can we", "can i", "could we", "would you", "would it be", "is it possible", "possible to", "please send", "pls send", "send me", "send us", "let me know", "let us know", "tell me", "tell us", "i need", "we need", "we would like", "we d like", "i d like", "i would like", "any chance", "i was wondering", "we were wondering", "do you have", "is there any", "is there a", "are we allowed", "looking for the", "remind me", "share the", "need the", "what is", "what s", "how do", "how can", "where is", "where do", "where can", "what time", "when can", "when do", "when should", "how late", "how early"],
        problems: &["doesn t work", "does not work", "don t work", "not working", "isn t working", "stopped working", "won t work", "doesnt work", "isnt working", "broken", "broke", "keeps dropping", "keeps disconnecting", "keeps cutting", "cutting out", "keeps going off", "disconnects", "can t connect", "cannot connect", "cant connect", "unable to connect", "won t connect", "not connecting", "no signal", "no connection", "not accepted", "isn t accepted", "doesn t open", "won t open", "wont open", "not opening", "leaking", "leak", "no hot water", "out of order", "wrong code", "code is wrong", "no power", "power cut", "reset the router", "restart the router", "not turning on", "won t turn on", "doesn t turn on", "jammed", "clogged", "blocked toilet", "not responding", "super slow", "very slow", "too slow", "isn t connecting", "doesn t connect"],
        complaints: &["dirty", "filthy", "disgusting", "unacceptable", "disappointed", "disappointing", "terrible", "horrible", "awful", "not clean", "smells", "stinks", "cockroach", "cockroaches", "bed bugs", "mould", "mold", "too noisy", "so noisy", "very noisy", "rude", "complain", "complaint", "not as described", "ridiculous"],
        thanks: &["thanks", "thank you", "thank", "thx", "ty", "cheers", "appreciate", "appreciated", "great", "lovely", "wonderful", "perfect", "all good", "awesome", "amazing", "loved", "love", "enjoyed", "fantastic", "brilliant", "excellent", "nice", "ok", "okay", "got it", "noted", "sounds good", "see you"],
        urgent: &["urgent", "urgently", "emergency", "asap", "locked out", "flood", "flooding", "gas smell", "smell of gas"],
    },
    Cues {
        lang: "de",
        starts: &["was", "wann", "wo", "wie", "welche", "welcher", "welches", "wer", "warum", "wieso", "gibt es", "gibts", "kann", "konnen", "konnten", "kannst", "konnt", "durfen", "darf", "ist es", "ist das", "ist der", "ist die", "habt", "haben sie", "hast du", "brauchen", "bitte", "ob"],
        requests: &["bitte", "konnten sie", "konnen sie", "kannst du", "konntest du", "konnt ihr", "konnen wir", "konnten wir", "kann ich", "darf ich", "durfen wir", "ist es moglich", "ware es moglich", "moglich", "bitte schicken", "bitte senden", "schicken sie", "sag mir", "sagen sie", "teilen sie", "ich brauche", "wir brauchen", "wir benotigen", "ich benotige", "wurden gerne", "mochten gerne", "wir mochten", "ich mochte", "wo finden", "wo ist", "wo konnen", "wie lautet", "wie ist", "wie kommen", "wie komme", "wann konnen", "wann mussen", "bis wann", "ab wann", "um wie viel uhr", "wie spat", "ich wollte fragen", "wollte fragen", "kurze frage", "frage"],
        problems: &["funktioniert nicht", "funktioniert leider nicht", "geht nicht", "geht leider nicht", "kaputt", "defekt", "ausgefallen", "fallt aus", "fallt standig aus", "bricht ab", "bricht standig ab", "bricht immer ab", "keine verbindung", "kein internet", "klappt nicht", "nicht offnen", "lasst sich nicht", "tropft", "kein warmwasser", "kein warmes wasser", "verbindet sich nicht", "nicht akzeptiert", "streikt", "spinnt", "verstopft", "undicht", "kein strom", "sehr langsam", "extrem langsam", "funktioniert nich", "geht nich", "ging nicht", "nicht funktioniert"],
        complaints: &["schmutzig", "dreckig", "eklig", "enttauscht", "inakzeptabel", "unverschamt", "stinkt", "zu laut", "sehr laut", "larm", "beschwerde", "beschweren", "schimmel", "kakerlaken", "unmoglich", "frechheit", "nicht sauber"],
        thanks: &["danke", "vielen dank", "dankeschon", "besten dank", "herzlichen dank", "super", "toll", "prima", "alles gut", "klappt", "perfekt", "wunderbar", "klasse", "schon", "genial", "top", "ok", "okay", "alles klar", "bis dann", "freuen uns"],
        urgent: &["dringend", "notfall", "ausgesperrt", "feuer", "uberschwemmung", "wasserrohrbruch", "gasgeruch"],
    },
    Cues {
        lang: "fr",
        starts: &["quel", "quelle", "quels", "quelles", "quand", "ou", "comment", "est ce", "est il", "y a t il", "y a il", "peut", "peut on", "pouvez", "pourriez", "pourrions", "pouvons", "puis je", "serait il", "avez vous", "auriez vous", "a quelle", "faut il", "combien", "svp", "s il vous plait", "merci de", "besoin"],
        requests: &["svp", "s il vous plait", "s il te plait", "stp", "pouvez vous", "pourriez vous", "pourrais tu", "peux tu", "peut on", "pouvons nous", "pourrions nous", "puis je", "est il possible", "serait il possible", "possible de", "envoyez moi", "envoyer le", "envoyer l", "me donner", "nous donner", "m indiquer", "nous indiquer", "nous dire", "me dire", "j ai besoin", "nous avons besoin", "on a besoin", "il nous faut", "je voudrais", "nous voudrions", "on voudrait", "j aimerais", "nous aimerions", "a quelle heure", "c est quoi", "c est ou", "ou se trouve", "ou est", "ou peut on", "ou peut", "comment faire", "comment on", "comment acceder", "comment se", "quel est", "quelle est", "merci de nous", "merci de me", "je souhaiterais", "nous souhaiterions", "je cherche"],
        problems: &["ne marche pas", "marche pas", "ne fonctionne pas", "fonctionne pas", "ne fonctionne plus", "marche plus", "en panne", "casse", "cassee", "se coupe", "coupe sans arret", "coupe tout le temps", "n arrive pas a me connecter", "arrive pas a me connecter", "impossible de se connecter", "impossible de me connecter", "impossible d ouvrir", "pas de connexion", "ne s ouvre pas", "s ouvre pas", "fuite", "fuit", "pas d eau chaude", "ne s allume pas", "ne passe pas", "plus de courant", "pas de courant", "pas d electricite", "tres lent", "ne capte pas", "deconnecte", "ne se connecte pas", "code incorrect", "code ne marche"],
        complaints: &["sale", "sales", "degoutant", "inacceptable", "decu", "decus", "decue", "decevant", "horrible", "bruyant", "trop de bruit", "odeur", "cafards", "moisissure", "pas propre", "plainte", "me plaindre", "inadmissible", "scandaleux"],
        thanks: &["merci", "merci beaucoup", "mille mercis", "genial", "parfait", "super", "top", "nickel", "impeccable", "tout est bon", "tout va bien", "magnifique", "excellent", "ok", "d accord", "bien recu", "a bientot", "ravis", "adore"],
        urgent: &["urgent", "urgence", "urgente", "bloques dehors", "bloquee dehors", "bloque dehors", "enfermes dehors", "coinces dehors", "au secours", "incendie", "inondation", "odeur de gaz"],
    },
    Cues {
        lang: "es",
        starts: &["que", "cual", "cuales", "cuando", "donde", "como", "a que", "hay", "habria", "puedo", "puede", "pueden", "podemos", "podria", "podrian", "podriais", "se puede", "tienen", "teneis", "tiene", "es posible", "seria posible", "hasta que", "desde que", "cuanto", "por favor", "necesito", "necesitamos"],
        requests: &["me puedes", "me podrias", "nos puedes", "nos podrias", "me puede", "nos puede", "me podria", "nos podria", "podemos", "se puede", "es posible", "seria posible", "por favor", "me envias", "me mandas", "nos mandas", "enviarme", "mandarme", "necesito", "necesitamos", "quisiera", "quisieramos", "me gustaria", "nos gustaria", "queria saber", "queriamos saber", "a que hora", "donde esta", "donde podemos", "como llegamos", "como llego", "como se", "cual es", "me dices", "me decis", "nos dices", "nos indicas", "indicarnos", "decirme", "pasarme", "me pasas"],
        problems: &["no funciona", "no va", "no anda", "roto", "rota", "estropeado", "estropeada", "averiado", "averiada", "se corta", "se cae", "no conecta", "no se conecta", "no puedo conectar", "no podemos conectar", "no consigo conectar", "no abre", "no se abre", "no hay agua caliente", "gotea", "fuga", "no enciende", "no me deja", "no nos deja", "no sale agua", "atascado", "muy lento", "sin luz", "no hay luz", "sin conexion", "codigo incorrecto", "no acepta"],
        complaints: &["sucio", "sucia", "asqueroso", "inaceptable", "decepcionado", "decepcionados", "decepcion", "horrible", "ruido", "mucho ruido", "ruidoso", "olor", "huele mal", "cucarachas", "moho", "queja", "quejarme", "reclamacion", "vergonzoso", "no estaba limpio"],
        thanks: &["gracias", "muchas gracias", "mil gracias", "genial", "perfecto", "todo bien", "estupendo", "maravilloso", "encantados", "excelente", "vale", "ok", "de acuerdo", "hasta luego", "nos vemos", "buenisimo", "muy bien"],
        urgent: &["urgente", "urgencia", "emergencia", "nos hemos quedado fuera", "nos quedamos fuera", "quedado fuera", "encerrados fuera", "socorro", "incendio", "inundacion", "olor a gas"],
    },
    Cues {
        lang: "pt",
        starts: &["qual", "quais", "quando", "onde", "como", "a que", "que", "ha", "tem", "posso", "pode", "podem", "podemos", "poderia", "poderiam", "seria possivel", "e possivel", "da para", "ate que", "a partir de que", "quanto", "por favor", "preciso", "precisamos", "gostaria", "sera"],
        requests: &["pode me", "podes me", "podia me", "poderia me", "pode nos", "poderia nos", "podemos", "e possivel", "seria possivel", "da para", "por favor", "me envia", "me manda", "nos manda", "enviar me", "mandar me", "preciso", "precisamos", "gostaria", "gostariamos", "queria saber", "queriamos saber", "a que horas", "que horas", "onde fica", "onde e", "onde podemos", "onde posso", "como chegamos", "como chego", "como faco", "como fazemos", "qual e", "qual o", "qual a", "me diz", "me diga", "nos diga", "informar", "me passa", "passar a"],
        problems: &["nao funciona", "nao esta funcionando", "nao esta a funcionar", "nao ta funcionando", "nao funcionou", "parou de funcionar", "quebrado", "quebrada", "quebrou", "avariado", "avariada", "estragado", "estragada", "cai toda", "caindo", "esta a cair", "nao conecta", "nao liga", "nao consigo conectar", "nao conseguimos conectar", "nao consigo ligar", "nao abre", "sem agua quente", "nao tem agua quente", "vazamento", "vaza", "esta a pingar", "entupido", "entupida", "muito lenta", "muito lento", "sem luz", "sem internet", "sem conexao", "codigo errado", "nao aceita"],
        complaints: &["sujo", "suja", "nojento", "nojo", "inaceitavel", "decepcionado", "decepcionados", "decepcao", "horrivel", "barulho", "muito barulho", "barulhento", "cheiro", "cheira mal", "baratas", "mofo", "bolor", "reclamacao", "reclamar", "vergonha", "nao estava limpo"],
        thanks: &["obrigado", "obrigada", "muito obrigado", "muito obrigada", "valeu", "perfeito", "otimo", "tudo certo", "tudo bem", "maravilhoso", "adoramos", "excelente", "ok", "combinado", "beleza", "ate logo", "ate ja", "show", "top", "incrivel"],
        urgent: &["urgente", "urgencia", "emergencia", "trancados", "trancado", "trancada", "ficamos presos", "ficamos fora", "ficamos do lado de fora", "socorro", "incendio", "inundacao", "cheiro a gas", "cheiro de gas"],
    },
    Cues {
        lang: "it",
        starts: &["qual", "quale", "quali", "quando", "dove", "come", "a che", "che", "c e", "ci sono", "posso", "puo", "puoi", "possiamo", "potrei", "potrebbe", "potreste", "potremmo", "sarebbe possibile", "e possibile", "si puo", "avete", "entro", "fino a", "quanto", "per favore", "per cortesia", "ho bisogno", "abbiamo bisogno", "vorrei", "vorremmo"],
        requests: &["mi puoi", "mi potresti", "ci puoi", "ci potresti", "mi puo", "ci puo", "mi potrebbe", "ci potrebbe", "possiamo", "si puo", "e possibile", "sarebbe possibile", "per favore", "per cortesia", "mi manda", "mi mandi", "ci manda", "ci mandi", "mandarmi", "inviarmi", "ho bisogno", "abbiamo bisogno", "vorrei", "vorremmo", "volevo sapere", "volevamo sapere", "a che ora", "dove si trova", "dov e", "dove e", "dove possiamo", "dove posso", "come arriviamo", "come arrivo", "come si", "come facciamo", "qual e", "quale e", "mi dice", "mi dici", "ci dice", "ci dici", "indicarmi", "indicarci", "sapere"],
        problems: &["non funziona", "non va", "non funzionano", "smesso di funzionare", "rotto", "rotta", "guasto", "guasta", "si disconnette", "si stacca", "continua a cadere", "non si connette", "non riesco a connettermi", "non riesco a collegarmi", "non riusciamo a connetterci", "non si collega", "non si apre", "non c e acqua calda", "niente acqua calda", "perdita", "non si accende", "intasato", "lentissimo", "molto lento", "senza corrente", "manca la corrente", "codice sbagliato", "non accetta"],
        complaints: &["sporco", "sporca", "sporchi", "schifo", "inaccettabile", "deluso", "delusi", "delusa", "deludente", "orribile", "rumore", "troppo rumore", "rumoroso", "puzza", "scarafaggi", "muffa", "lamentela", "reclamo", "lamentarmi", "vergognoso", "non era pulito"],
        thanks: &["grazie", "grazie mille", "mille grazie", "perfetto", "ottimo", "tutto bene", "tutto ok", "benissimo", "meraviglioso", "fantastico", "bellissimo", "ok", "va bene", "a presto", "splendido", "top", "gentilissimi"],
        urgent: &["urgente", "urgenza", "emergenza", "chiusi fuori", "chiuso fuori", "chiusa fuori", "rimasti fuori", "siamo fuori", "incendio", "allagamento", "odore di gas"],
    },
    Cues {
        lang: "nl",
        starts: &["wat", "wanneer", "waar", "hoe", "welke", "welk", "wie", "waarom", "is er", "zijn er", "kan", "kunnen", "kunt", "kun", "mogen", "mag", "zou", "zouden", "heeft", "hebben jullie", "hebt u", "is het", "tot hoe laat", "vanaf hoe laat", "hoeveel", "graag", "alstublieft", "aub", "svp"],
        requests: &["kunt u", "kun je", "kunnen jullie", "zou u", "zou je", "zouden jullie", "kunnen we", "kunnen wij", "kan ik", "mag ik", "mogen we", "mogen wij", "is het mogelijk", "zou het mogelijk", "mogelijk", "graag", "alstublieft", "stuur", "sturen", "doorsturen", "laat weten", "laten weten", "ik heb nodig", "we hebben nodig", "hebben we nodig", "nodig", "ik wil graag", "wij willen graag", "we willen graag", "hoe laat", "waar is", "waar kunnen", "waar kan", "hoe komen", "hoe kom", "hoe werkt", "wat is", "vertellen", "vroeg me af", "vragen me af", "vraagje", "vraag"],
        problems: &["werkt niet", "werkt het niet", "werkt niet meer", "doet het niet", "doet het niet meer", "doet niks", "kapot", "stuk", "defect", "valt weg", "valt steeds weg", "valt telkens weg", "geen verbinding", "kan niet verbinden", "kunnen niet verbinden", "maakt geen verbinding", "geen internet", "gaat niet open", "krijgen de deur niet open", "krijg de deur niet open", "lekt", "lekkage", "geen warm water", "gaat niet aan", "storing", "verstopt", "heel traag", "erg traag", "super traag", "geen stroom", "code klopt niet", "verkeerde code", "niet geaccepteerd"],
        complaints: &["vies", "smerig", "onacceptabel", "teleurgesteld", "teleurstellend", "vreselijk", "verschrikkelijk", "lawaai", "herrie", "te luid", "stinkt", "kakkerlakken", "schimmel", "klacht", "klagen", "schandalig", "niet schoon"],
        thanks: &["bedankt", "dank je", "dank u", "dankjewel", "dankuwel", "hartelijk dank", "heel erg bedankt", "top", "prima", "super", "perfect", "geweldig", "fantastisch", "heerlijk", "alles goed", "ok", "oke", "tot dan", "tot straks", "fijn"],
        urgent: &["dringend", "spoed", "noodgeval", "nood", "buitengesloten", "staan buiten", "kunnen niet naar binnen", "kunnen er niet in", "brand", "overstroming", "gaslucht"],
    },
];

/// A cue phrase as normalised words and stems.
#[derive(Debug, Clone)]
struct Cue {
    written: &'static str,
    words: Vec<String>,
    stems: Vec<String>,
}

/// The cue lists of one language, ready to match.
#[derive(Debug, Clone)]
struct LanguageCues {
    lang: &'static str,
    starts: Vec<Cue>,
    requests: Vec<Cue>,
    problems: Vec<Cue>,
    complaints: Vec<Cue>,
    thanks: Vec<Cue>,
    urgent: Vec<Cue>,
}

/// All cue lists, built once per model.
#[derive(Debug, Clone)]
pub struct ActReader {
    languages: Vec<LanguageCues>,
}

/// The act of a message and the cue that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActReading {
    pub act: Act,
    /// The phrase that decided it ("doesn't work", "?"); `None` for a plain statement.
    pub cue: Option<String>,
}

impl Default for ActReader {
    fn default() -> Self {
        let build = |lang: &'static str, list: &'static [&'static str]| -> Vec<Cue> {
            list.iter()
                .map(|written| {
                    let (words, stems) = text::phrase_forms(written, Some(lang));
                    Cue { written, words, stems }
                })
                .collect()
        };
        let languages = CUES
            .iter()
            .map(|c| LanguageCues {
                lang: c.lang,
                starts: build(c.lang, c.starts),
                requests: build(c.lang, c.requests),
                problems: build(c.lang, c.problems),
                complaints: build(c.lang, c.complaints),
                thanks: build(c.lang, c.thanks),
                urgent: build(c.lang, c.urgent),
            })
            .collect();
        ActReader { languages }
    }
}

impl ActReader {
    /// The language whose cues `text` matches most (ties and no match: `None`): for
    /// messages whose language neither the booking nor the detector could tell.
    pub fn guess_language(&self, text: &Text) -> Option<&'static str> {
        let mut best: Option<(&'static str, usize)> = None;
        let mut tie = false;
        for l in &self.languages {
            let hits = [&l.starts, &l.requests, &l.problems, &l.thanks]
                .iter()
                .flat_map(|list| list.iter())
                .filter(|c| contains(&text.words, &c.words))
                .count();
            match best {
                Some((_, n)) if hits == n => tie = true,
                Some((_, n)) if hits < n => {}
                _ if hits > 0 => {
                    best = Some((l.lang, hits));
                    tie = false;
                }
                _ => {}
            }
        }
        best.filter(|_| !tie).map(|(lang, _)| lang)
    }

    /// The act of `text` written in `lang` (its cues and English's, which guests mix in;
    /// every language's when `lang` is unknown).
    pub fn read(&self, text: &Text, lang: Option<&str>) -> ActReading {
        let cues: Vec<&LanguageCues> = self
            .languages
            .iter()
            .filter(|l| lang.is_none_or(|lang| l.lang == lang || l.lang == "en"))
            .collect();
        let found = |pick: fn(&LanguageCues) -> &Vec<Cue>| -> Option<String> {
            cues.iter()
                .flat_map(|l| pick(l).iter())
                .find(|c| text.has_phrase(&c.words, &c.stems))
                .map(|c| c.written.to_string())
        };
        let reading = |act, cue: Option<String>| ActReading { act, cue };
        if let Some(cue) = found(|l| &l.urgent) {
            return reading(Act::Urgent, Some(cue));
        }
        if let Some(cue) = found(|l| &l.problems) {
            return reading(Act::Problem, Some(cue));
        }
        if let Some(cue) = found(|l| &l.complaints) {
            return reading(Act::Complaint, Some(cue));
        }
        if text.question_mark {
            return reading(Act::Question, Some("?".into()));
        }
        if let Some(cue) = self.question_start(text, &cues).or_else(|| found(|l| &l.requests)) {
            return reading(Act::Question, Some(cue));
        }
        if let Some(cue) = found(|l| &l.thanks) {
            return reading(Act::Thanks, Some(cue));
        }
        // "wifi password", "parking pls": a few words naming a thing are a request.
        let names_a_thing = text.words.iter().any(|w| !text::is_function_word(w));
        if text.words.len() <= SHORT_REQUEST_WORDS && names_a_thing {
            return reading(Act::Question, Some("short request".into()));
        }
        reading(Act::Statement, None)
    }

    /// A question word at the start of a clause ("when do we..."; not "tell us when we
    /// arrive").
    fn question_start(&self, text: &Text, cues: &[&LanguageCues]) -> Option<String> {
        text.clause_starts.iter().find_map(|&at| {
            cues.iter().flat_map(|l| l.starts.iter()).find_map(|c| {
                let end = at + c.words.len();
                (end <= text.words.len() && text.words[at..end] == c.words[..])
                    .then(|| c.written.to_string())
            })
        })
    }
}

fn contains(haystack: &[String], needle: &[String]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(text: &str, lang: &str) -> Act {
        ActReader::default()
            .read(&Text::read(text, Some(lang)), Some(lang))
            .act
    }

    #[test]
    fn the_act_follows_the_cue_order() {
        assert_eq!(act("Thanks, the wifi works great!", "en"), Act::Thanks);
        assert_eq!(act("the wifi keeps dropping, can you reset the router?", "en"), Act::Problem);
        assert_eq!(act("We arrive at 6", "en"), Act::Statement);
        assert_eq!(act("what's the network called", "en"), Act::Question);
        assert_eq!(act("URGENT we are locked out", "en"), Act::Urgent);
        assert_eq!(act("das WLAN ist kaputt", "de"), Act::Problem);
        assert_eq!(act("le wifi ne marche pas", "fr"), Act::Problem);
        assert_eq!(act("A che ora possiamo entrare", "it"), Act::Question);
        assert_eq!(act("Hoe laat moeten we vertrekken", "nl"), Act::Question);
    }

    #[test]
    fn a_question_word_inside_a_clause_is_not_a_question() {
        assert_eq!(act("We will text you when we arrive", "en"), Act::Statement);
    }
}
