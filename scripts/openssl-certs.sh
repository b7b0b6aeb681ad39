#!/usr/bin/env bash
# Makes a private CA and one certificate per node name with the openssl CLI,
# exactly as the README's walkthrough shows (until `tunneld certs` exists).
#   scripts/openssl-certs.sh DIR primary-1 standby-1
# Writes DIR/ca.key, DIR/ca.crt and DIR/<node>.key, DIR/<node>.crt (keys 0600).
set -euo pipefail
dir=$1; shift
mkdir -p "$dir" && cd "$dir"
umask 077
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout ca.key -out ca.crt -days 3650 -subj "/CN=tunneld CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for node in "$@"; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$node.key" -out "$node.csr" -subj "/CN=$node" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n' \
    "$node" > "$node.ext"
  openssl x509 -req -in "$node.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 90 -sha256 -extfile "$node.ext" -out "$node.crt" 2>/dev/null
  rm -f "$node.csr" "$node.ext"
done
chmod 644 ca.crt ./*.crt
