"""Redaction of secrets and PII in trajectory text, before it becomes training data.

    redactor = Redactor(RedactionSettings())          # picklable; ship it to Ray Data tasks
    redactor.redact(text)    -> Redaction(text, counts)   # counts: kind -> matches replaced
    redactor.redact_tree(v)  -> (copy of v, Counter)      # every str leaf of a JSON-like value; keys kept, and name their values

Each match becomes `[REDACTED:<KIND>]` (settings.placeholder). Kinds, most specific first (KINDS):
private_key, the provider keys (aws_access_key, github_token, gitlab_token, anthropic_key, openai_key,
slack_token, stripe_key, sendgrid_key, twilio_key, pypi_token, google_api_key, npm_token, huggingface_token, jwt),
aws_secret_key, basic_auth, bearer_token, url_password, cli_password, env_secret, email, credit_card, ssn,
ip_address, phone. Where matches overlap the earlier kind wins and the other is dropped whole:
`GITHUB_TOKEN=ghp_...` counts one github_token, `Bearer eyJ...` one jwt, `Bearer ya29...` one google_api_key.
Placeholders already in a text are never matched again, so redaction is idempotent. The modules: keys.py and
service_keys.py (fixed-shape credentials), auth.py (URLs and Authorization headers), cli_passwords.py,
env_secrets.py and config_formats.py (secret-named values), network.py (emails, IPs), identity_numbers.py
(cards, SSNs), phones.py. settings.RULES_VERSION goes into the settings' dump, and so into the build's config
hash: bump it whenever the rules find something else, so the next build redacts every session again.

Library or rules, per kind (measured by `python -m trajforge.redaction.compare` on
tests/data/redaction_labelled.jsonl, 326 texts and 282 labelled values, and on the example sessions):

- Secrets: our rules everywhere; detect-secrets is not used at run time. On the 13 kinds it covers,
  its `scan` (default filters) reaches precision 0.62 / recall 0.39 even when a fragment counts as a
  find, its plugins without filters 0.67 / 0.46, ours 1.00 / 1.00; it runs at 0.06 MB/s (0.27 without
  filters) against about 8 MB/s. Its weak spots are ours to cover: no plugin for Anthropic, Google or
  Hugging Face keys, bearer or Basic headers, emails or phones; regex plugins report their first
  group (`ghp` for a GitHub token, the header line of a PEM block), which cannot drive a replacement;
  KeywordDetector (env_secret) 0.35 / 0.31; BasicAuthDetector (url_password) 0.60 / 0.69; AWS secret
  keys 0.14 recall; IPPublicDetector sees public IPv4 only, and its default filters drop them all.
  Its high-entropy plugins would also have to be tuned against commit SHAs, digests and hashes.
- Phones: a candidate regex plus `phonenumbers` as the judge (phones.py). PhoneNumberMatcher over the
  whole text (3 regions) scores 0.78 / 0.94 at 1.2 MB/s; the regex alone 0.71 / 0.97; ours 1.00 / 1.00.

These numbers are optimistic: the labelled set was written alongside the rules. A batch of 27 texts
written after the rules were settled had 2 misses and 1 wrong span among 30 values, and showed a gap
(`curl -u user:password`); all since fixed, and the batch is part of the set. The 9 other example sessions (no PII in them) give no finding at all, and
the findings on about 150 MB of third-party code and docs (site-packages) were read one by one: the
false positives seen there (SVG path numbers, ASN.1 OIDs, tokenizer special tokens, minified JS) are
fixed; a few remain (`github://org:repo@sha` fsspec URLs, ABNF `token = 1*tchar`, `versions less than
2.8.10.1`). A second audit (2026-12-07) wrote the shapes a coding agent's trajectory holds, provider by
provider, with their look-alikes: 27 texts from it joined the set (Twilio, PyPI, command-line passwords,
passphrases, connection strings, cards, SSNs, Slack app tokens, Google OAuth secrets, Azure SAS URLs), and the
fixes changed 6 findings on 372 MB of site-packages (new: 3 `auth_password="open sesame"` in tornado's tests,
2 `111-22-3333` SSNs in pyparsing's docs; gone: `auth_password="səcrət"`, a plain word now in any alphabet, as
`"password": "Contraseña"` in a locale file), none on the example sessions.

Decisions:
- IPs: private addresses are redacted (an internal address map is still someone's network); loopback,
  unspecified and netmask addresses are kept (`keep_loopback_ips`), so are CIDR networks (`10.0.0.0/16`),
  four-part versions in a version context (`version 1.2.3.4`, `==1.2.3.4`, `Chrome/120.0.0.0`), OIDs,
  and dotted quads whose first three parts are single digits (`7.4.3.3`, `3.1.1.6`: sections and
  versions; the real ones are public resolvers such as 1.1.1.1 and 8.8.8.8, nobody's PII). EC2 host
  names spell the address (`ip-10-42-3-17.us-west-1.compute.internal`): its dashed digits are redacted.
- Phones: `+<country code>` numbers of a possible length anywhere; national formats only for
  `phone_regions` (US, GB, DE), valid and grouped the way the country writes them; bare digit runs
  never (IDs, epochs, account numbers), so `030 901820` is a phone and `4155550132` is not.
- Placeholders (`<your-token>`, `${VAR}`, `changeme`, `xxxx`, `sk-...`, `password1`) are kept: they are
  public and keep training text realistic. Sentry DSNs are kept (a client key meant to be public).
- A secret is replaced, not its context: the name of an env var, the user and host of a URL, the
  `Bearer` word, the command and flag of `mysql -p...` stay, so the text still says what happened.
- Passphrases: a quoted value with blanks is a secret only for a password-named field (`password`,
  `PASSWD`, `passphrase`, `pwd`, `pass`) and when it does not read as prose, a label or a translation
  (`"This field is required."`, `"Invalid password"`, `"Mot de passe"` are kept); `"open sesame"` is not.
- AWS's documented example keys (`AKIAIOSFODNN7EXAMPLE`) are redacted like any key: scanners and
  reviewers treat them as keys, and the loss to training text is nil.
- Cards: Luhn-valid numbers of a card issuer's prefix and length; grouped ones anywhere, one run of
  digits only after a card word on the line (seeds and big integers in code pass Luhn one time in ten).
  Public test numbers (4242 4242 4242 4242) are redacted too: a log cannot tell them from a customer's.
- SSNs: dashed `AAA-GG-SSSS` with a possible area, group and serial anywhere; undashed only after `SSN`
  or `social security`.
- Command-line passwords only where the tool's flag means a password (mysql's glued `-p`, `sshpass -p`,
  `redis-cli -a`, `docker login -p`, ...): `ps -p 1234`, `gcc -pthread`, `mysql -p db` (a prompt) are kept.

Speed: a rule runs only if one of its literal needles occurs in the lower-cased text, and the digit
patterns use the `regex` engine (2-5x faster than re on them). About 8-9 MB/s of CPU per core on the
example sessions and 12 MB/s on source code (13 and 16 before the 2026-12-07 kinds: cards, SSNs and
Twilio SIDs have no literal to gate on), 2 MB/s on the secret-dense labelled set.
"""

from trajforge.redaction.redactor import Found, Redaction, Redactor
from trajforge.redaction.settings import KINDS, RedactionSettings

__all__ = ["KINDS", "Found", "Redaction", "Redactor", "RedactionSettings"]
