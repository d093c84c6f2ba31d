/** The SPIFFE core: IDs, selectors, SVIDs and bundles. Knows no transport and no storage. */
export * from './errors.js';
export * from './id.js';
export * from './match.js';
export * from './k8sname.js';
export * from './selector.js';
export * from './keys.js';
export { OID, encodeName, mintCertificate, parseCertificate, issuerFromKey, keyIdentifier, randomSerial, SerialSource, signedBy, pemFromDer, derFromPem, splitConcatenatedDer, KeyUsage, type CertificateIssuer, type CertificateFields, type ParsedCertificate } from './x509.js';
export * from './x509svid.js';
export * from './csr.js';
export * from './jwtsvid.js';
export * from './bundle.js';
