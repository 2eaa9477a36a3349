using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace AttentionActors.Cluster.Security;

/// <summary>
/// Makes a cluster's certificates (<c>attention cluster certs</c>): a CA, and node and client
/// certificates it signs (ECDSA P-256, valid for a year, both TLS server and client use, the role in
/// the subject's OU). Private keys are written readable by their owner only.
/// </summary>
public static class CertificateAuthority
{
    public const string CaFile = "ca.pem";
    public const string CaKeyFile = "ca.key";
    public const string NodeFile = "node.pfx";
    public const string ClientFile = "client.pfx";

    /// <summary>Writes ca.pem, ca.key, node.pfx and client.pfx into <paramref name="directory"/>; refuses to overwrite a CA already there.</summary>
    public static void Create(string directory, TimeSpan? validity = null)
    {
        Directory.CreateDirectory(directory);
        string caPath = Path.Combine(directory, CaFile);
        if (File.Exists(caPath))
        {
            throw new IOException($"{caPath} already exists: a cluster has one CA; remove the folder's files to make a new one");
        }

        var lifetime = validity ?? TimeSpan.FromDays(365);
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest($"CN=attention cluster CA, O={ClusterCertificates.Organization}", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        using var ca = caRequest.CreateSelfSigned(now.AddMinutes(-5), now + lifetime);
        WritePrivate(Path.Combine(directory, CaKeyFile), caKey.ExportPkcs8PrivateKeyPem());
        File.WriteAllText(caPath, ca.ExportCertificatePem());
        Issue(ca, caKey, "node", Path.Combine(directory, NodeFile), lifetime);
        Issue(ca, caKey, "client", Path.Combine(directory, ClientFile), lifetime);
    }

    /// <summary>A certificate of <paramref name="role"/> signed by <paramref name="ca"/>, written as a PKCS#12 file with its key.</summary>
    public static void Issue(X509Certificate2 ca, ECDsa caKey, string role, string path, TimeSpan lifetime)
    {
        ArgumentNullException.ThrowIfNull(ca);
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN=attention {role}, OU={role}, O={ClusterCertificates.Organization}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyAgreement, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        var now = DateTimeOffset.UtcNow;
        using var signed = request.Create(ca.SubjectName, X509SignatureGenerator.CreateForECDsa(caKey), now.AddMinutes(-5), now + lifetime, RandomNumberGenerator.GetBytes(16));
        using var withKey = signed.CopyWithPrivateKey(key);
        WritePrivate(path, withKey.Export(X509ContentType.Pkcs12));
    }

    private static void WritePrivate(string path, string text) => WritePrivate(path, System.Text.Encoding.ASCII.GetBytes(text));

    private static void WritePrivate(string path, byte[] bytes)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        using var file = new FileStream(path, options);
        file.Write(bytes);
    }
}
