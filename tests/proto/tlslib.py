"""Test certificates, made by the tests with the openssl command line.

Never commit a private key: every test makes its own in a temp dir.

  pki = Pki(tmp_path / "pki")          # a private CA ("moat test CA")
  srv = pki.issue("mx.test")           # RSA key + certificate signed by the CA
  ec  = pki.issue("mx.test", ec=True)  # ECDSA (P-256)
  old = pki.issue("mx.test", days=-1)  # expired yesterday
  cli = pki.issue("alice", client=True)
  pki.ca_file                          # the CA certificate (PEM)
  srv.cert, srv.key, srv.chain         # file paths; chain = key + cert + CA in one PEM
  pki.fingerprint(srv.cert, "sha256")  # "AB:CD:..." as Postfix prints it
  pki.self_signed("other.test")        # not from our CA

Each call runs a few openssl commands (RSA 2048 takes ~50 ms).
"""

import os
import subprocess
from pathlib import Path

OPENSSL = "/usr/bin/openssl"


def _run(*args, cwd=None):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


class Issued:
    def __init__(self, key, cert, chain):
        self.key = str(key)
        self.cert = str(cert)
        self.chain = str(chain)


def _newkey(path, ec):
    if ec:
        _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    else:
        _run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path))


class Pki:
    def __init__(self, directory, ca_name="moat test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._serial = 1
        self.ca_key = self.dir / "ca.key"
        self.ca_file = str(self.dir / "ca.pem")
        _newkey(self.ca_key, ec=True)
        _run("req", "-x509", "-new", "-key", str(self.ca_key), "-out", self.ca_file, "-days", "30",
             "-subj", "/CN=%s" % ca_name, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _name(self, cn, tag):
        safe = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in cn)
        self._serial += 1
        return self.dir / ("%s-%s-%d" % (safe, tag, self._serial))

    def issue(self, cn, ec=False, days=30, client=False, san=None):
        """A key and certificate for cn signed by the CA.  days < 0: already
        expired (valid from 2 days ago until 1 day ago, via -not_before
        and -not_after).  san: subjectAltName DNS names (default [cn])."""
        base = self._name(cn, "ec" if ec else "rsa")
        key, csr, cert, chain = (Path(str(base) + x) for x in (".key", ".csr", ".pem", ".chain"))
        _newkey(key, ec)
        _run("req", "-new", "-key", str(key), "-out", str(csr), "-subj", "/CN=%s" % cn)
        names = san if san is not None else ([] if client else [cn])
        ext = Path(str(base) + ".ext")
        lines = ["basicConstraints=CA:FALSE",
                 "extendedKeyUsage=%s" % ("clientAuth" if client else "serverAuth,clientAuth")]
        if names:
            lines.append("subjectAltName=" + ",".join("DNS:%s" % n for n in names))
        ext.write_text("\n".join(lines) + "\n")
        args = ["x509", "-req", "-in", str(csr), "-CA", self.ca_file, "-CAkey", str(self.ca_key),
                "-set_serial", str(self._serial), "-out", str(cert), "-extfile", str(ext)]
        if days < 0:
            # openssl x509 has no not_before/not_after (3.0); "ca" has.
            args = None
            self._ca_sign(csr, cert, ext, "20200101000000Z", "20200102000000Z")
        else:
            args += ["-days", str(days)]
            _run(*args)
        chain.write_text(key.read_text() + cert.read_text() + Path(self.ca_file).read_text())
        os.chmod(key, 0o600)
        return Issued(key, cert, chain)

    def _ca_sign(self, csr, cert, ext, start, end):
        db = self.dir / "ca-db"
        db.mkdir(exist_ok=True)
        index = db / "index.txt"
        if not index.exists():
            index.write_text("")
        conf = db / "ca.cnf"
        conf.write_text(
            "[ca]\ndefault_ca=test\n[test]\ndatabase=%s\nnew_certs_dir=%s\nserial=%s\n"
            "default_md=sha256\npolicy=any\nunique_subject=no\n[any]\ncommonName=supplied\n"
            % (index, db, db / "serial"))
        (db / "serial").write_text("%04X\n" % (self._serial + 1000))
        _run("ca", "-batch", "-config", str(conf), "-in", str(csr), "-out", str(cert),
             "-keyfile", str(self.ca_key), "-cert", self.ca_file, "-startdate", start,
             "-enddate", end, "-extfile", str(ext), "-notext")

    def self_signed(self, cn, ec=False):
        base = self._name(cn, "self")
        key, cert, chain = (Path(str(base) + x) for x in (".key", ".pem", ".chain"))
        _newkey(key, ec)
        _run("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "30",
             "-subj", "/CN=%s" % cn, "-addext", "subjectAltName=DNS:%s" % cn)
        chain.write_text(key.read_text() + cert.read_text())
        return Issued(key, cert, chain)

    @staticmethod
    def fingerprint(cert, digest="sha256", pubkey=False):
        """Postfix's form: upper-case hex pairs joined by ':'."""
        if pubkey:
            der = subprocess.run([OPENSSL, "x509", "-in", str(cert), "-noout", "-pubkey"],
                                 capture_output=True, check=True).stdout
            der = subprocess.run([OPENSSL, "pkey", "-pubin", "-outform", "DER"], input=der,
                                 capture_output=True, check=True).stdout
            out = subprocess.run([OPENSSL, "dgst", "-" + digest, "-c"], input=der,
                                 capture_output=True, check=True, text=False).stdout.decode()
            return out.split("= ", 1)[1].strip().upper()
        out = _run("x509", "-in", str(cert), "-noout", "-fingerprint", "-" + digest)
        return out.split("=", 1)[1].strip().upper()
