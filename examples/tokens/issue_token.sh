#!/bin/sh
# Run: WSBRIDGE_JWT_SECRET=... sh examples/tokens/issue_token.sh SUBJECT '["trade:*"]'
#
# Issues an HS256 token for `wsbridge serve --jwt-secret` with openssl only. SUBJECT is
# put in the JSON as it is (no quotes or backslashes in it); the second
# argument is the channels claim, a JSON list; the token expires after
# WSBRIDGE_TOKEN_TTL seconds (default 300).
set -eu
subject=${1:?usage: issue_token.sh SUBJECT CHANNELS_JSON}
channels=${2:-[]}
: "${WSBRIDGE_JWT_SECRET:?set WSBRIDGE_JWT_SECRET}"
now=$(date +%s)
exp=$((now + ${WSBRIDGE_TOKEN_TTL:-300}))

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

header=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"%s","channels":%s,"iat":%s,"exp":%s}' "$subject" "$channels" "$now" "$exp" | b64url)
signature=$(printf '%s' "$header.$payload" | openssl dgst -sha256 -hmac "$WSBRIDGE_JWT_SECRET" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$signature"
