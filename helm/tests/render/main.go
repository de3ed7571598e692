// Command render renders a Helm chart the way `helm template` does, for tests on machines where
// Helm itself cannot be installed. It implements the parts of Helm's engine this repository's
// chart relies on, following Helm 3's pkg/engine and pkg/chartutil:
//
//   - every file under templates/ is parsed into one template set, named
//     "<chart>/templates/<path>", so `include` can call defines and whole files;
//   - the function map is sprig's text/template map without env and expandenv, plus Helm's
//     include, required, fail, toYaml, fromYaml, toJson, fromJson and a lookup that finds nothing;
//   - missing keys render as the zero value and "<no value>" is removed from the output;
//   - files whose name starts with "_" are not rendered as manifests; NOTES.txt is rendered (so a
//     broken NOTES.txt fails as it would on install) but printed only with -notes;
//   - values: values.yaml, then each -f file merged over the previous ones, then each -set, then
//     coalesced with the chart's defaults (a null from the user deletes a default); numbers
//     from YAML files are float64 as with sigs.k8s.io/yaml, numbers from -set are int64 as with
//     Helm's strvals;
//   - the coalesced values are validated against values.schema.json when the chart has one;
//   - Chart.yaml's kubeVersion constraint is checked against -kube-version;
//   - every rendered document must parse as YAML; empty documents are dropped.
//
// Not implemented (the chart does not use them): tpl, toToml, .Files, subcharts and
// dependencies, library charts, post-renderers, hook ordering (hooks are printed like
// `helm template` prints them, in file order).
//
// Usage: render -chart DIR [-f values.yaml]... [-set a.b=c]... [-set-string a.b=c]...
//
//	[-name RELEASE] [-namespace NS] [-kube-version 1.30.0] [-api-versions g/v,...] [-upgrade] [-notes]
//
// Output: the manifests on stdout as `helm template` prints them ("---\n# Source: ...").
// Errors: on stderr, exit status 1.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	yamlv2 "gopkg.in/yaml.v2"
	yaml "gopkg.in/yaml.v3"
)

// Metadata is Chart.yaml as templates see it through .Chart (Helm's chart.Metadata).
type Metadata struct {
	Name         string            `json:"name"`
	Home         string            `json:"home"`
	Sources      []string          `json:"sources"`
	Version      string            `json:"version"`
	Description  string            `json:"description"`
	Keywords     []string          `json:"keywords"`
	Maintainers  []interface{}     `json:"maintainers"`
	Icon         string            `json:"icon"`
	APIVersion   string            `json:"apiVersion"`
	Condition    string            `json:"condition"`
	Tags         string            `json:"tags"`
	AppVersion   string            `json:"appVersion"`
	Deprecated   bool              `json:"deprecated"`
	Annotations  map[string]string `json:"annotations"`
	KubeVersion  string            `json:"kubeVersion"`
	Dependencies []interface{}     `json:"dependencies"`
	Type         string            `json:"type"`
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (kv KubeVersion) String() string     { return kv.Version }
func (kv KubeVersion) GitVersion() string { return kv.Version }

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

// Has reports whether an API version ("apps/v1") or resource ("apps/v1/Deployment") is served.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// Capabilities is .Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion map[string]string
}

// The API versions a cluster of the -kube-version serves by default, as far as this chart cares.
var defaultAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v1", "autoscaling/v2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1",
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	var valueFiles, sets, setStrings multiFlag
	chartDir := flag.String("chart", "", "chart directory")
	name := flag.String("name", "release-name", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVersion := flag.String("kube-version", "1.30.0", "Kubernetes version for .Capabilities")
	apiVersions := flag.String("api-versions", "", "extra API versions for .Capabilities.APIVersions, comma-separated")
	upgrade := flag.Bool("upgrade", false, "render as an upgrade (.Release.IsUpgrade)")
	notes := flag.Bool("notes", false, "also print NOTES.txt")
	flag.Var(&valueFiles, "f", "values file (repeatable)")
	flag.Var(&sets, "set", "key=value override (repeatable)")
	flag.Var(&setStrings, "set-string", "key=value override, value kept a string (repeatable)")
	flag.Parse()
	if *chartDir == "" {
		fmt.Fprintln(os.Stderr, "render: -chart is required")
		os.Exit(2)
	}
	out, err := run(*chartDir, *name, *namespace, *kubeVersion, *apiVersions, *upgrade, *notes, valueFiles, sets, setStrings)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
	fmt.Print(out)
}

func run(chartDir, name, namespace, kubeVersion, apiVersions string, upgrade, notes bool,
	valueFiles, sets, setStrings []string) (string, error) {
	meta, err := loadMetadata(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	caps, err := capabilities(kubeVersion, apiVersions)
	if err != nil {
		return "", err
	}
	if meta.KubeVersion != "" {
		constraint, err := semver.NewConstraint(meta.KubeVersion)
		if err != nil {
			return "", fmt.Errorf("Chart.yaml kubeVersion %q: %w", meta.KubeVersion, err)
		}
		v, err := semver.NewVersion(caps.KubeVersion.Version)
		if err != nil {
			return "", err
		}
		if !constraint.Check(v) {
			return "", fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s",
				meta.KubeVersion, caps.KubeVersion.Version)
		}
	}

	values, err := buildValues(chartDir, valueFiles, sets, setStrings)
	if err != nil {
		return "", err
	}
	if err := validateSchema(chartDir, meta.Name, values); err != nil {
		return "", err
	}

	templates, err := loadTemplates(chartDir, meta.Name)
	if err != nil {
		return "", err
	}
	top := map[string]interface{}{
		"Chart":        meta,
		"Capabilities": caps,
		"Release": map[string]interface{}{
			"Name":      name,
			"Namespace": namespace,
			"IsUpgrade": upgrade,
			"IsInstall": !upgrade,
			"Revision":  map[bool]int{false: 1, true: 2}[upgrade],
			"Service":   "Helm",
		},
		"Values": values,
		"Files":  map[string]interface{}{},
	}
	rendered, err := render(templates, top, meta.Name)
	if err != nil {
		return "", err
	}
	return assemble(rendered, meta.Name, notes)
}

func loadMetadata(file string) (*Metadata, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	raw, err := yamlToJSONValue(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	buf, _ := json.Marshal(raw)
	meta := &Metadata{}
	if err := json.Unmarshal(buf, meta); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if meta.APIVersion != "v2" {
		return nil, fmt.Errorf("%s: apiVersion must be v2, got %q", file, meta.APIVersion)
	}
	if meta.Name == "" {
		return nil, fmt.Errorf("%s: name is required", file)
	}
	if _, err := semver.StrictNewVersion(meta.Version); err != nil {
		return nil, fmt.Errorf("%s: version %q is not SemVer 2: %w", file, meta.Version, err)
	}
	if meta.Type != "" && meta.Type != "application" {
		return nil, fmt.Errorf("%s: only application charts are supported, got type %q", file, meta.Type)
	}
	return meta, nil
}

func capabilities(kubeVersion, extra string) (Capabilities, error) {
	v, err := semver.NewVersion(kubeVersion)
	if err != nil {
		return Capabilities{}, fmt.Errorf("-kube-version %q: %w", kubeVersion, err)
	}
	apis := append([]string{}, defaultAPIVersions...)
	for _, a := range strings.Split(extra, ",") {
		if a = strings.TrimSpace(a); a != "" {
			apis = append(apis, a)
		}
	}
	return Capabilities{
		KubeVersion: KubeVersion{
			Version: "v" + v.String(),
			Major:   strconv.FormatUint(v.Major(), 10),
			Minor:   strconv.FormatUint(v.Minor(), 10),
		},
		APIVersions: VersionSet(apis),
		HelmVersion: map[string]string{"Version": "v3"},
	}, nil
}

// yamlToJSONValue parses YAML the way sigs.k8s.io/yaml does for Helm: through JSON, so every
// number becomes a float64 and every map a map[string]interface{}.
func yamlToJSONValue(data []byte) (interface{}, error) {
	var v interface{}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	buf, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out interface{}
	if err := json.Unmarshal(buf, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func readValuesFile(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	v, err := yamlToJSONValue(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := v.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: values must be a map", file)
	}
	return m, nil
}

func buildValues(chartDir string, valueFiles, sets, setStrings []string) (map[string]interface{}, error) {
	defaults, err := readValuesFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	user := map[string]interface{}{}
	for _, f := range valueFiles {
		m, err := readValuesFile(f)
		if err != nil {
			return nil, err
		}
		user = mergeMaps(user, m)
	}
	for _, s := range sets {
		if err := parseSet(s, user, true); err != nil {
			return nil, err
		}
	}
	for _, s := range setStrings {
		if err := parseSet(s, user, false); err != nil {
			return nil, err
		}
	}
	values := coalesce(user, defaults)
	// Helm gives every chart a "global" table, so a schema must allow it.
	if _, ok := values["global"]; !ok {
		values["global"] = map[string]interface{}{}
	}
	return values, nil
}

// mergeMaps is Helm's merge of -f files: b over a, maps merged key by key.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(map[string]interface{}); ok {
			if bv, ok := out[k]; ok {
				if bvm, ok := bv.(map[string]interface{}); ok {
					out[k] = mergeMaps(bvm, vm)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

// coalesce is Helm's coalesceValues: the user's values over the chart's defaults; a user null
// deletes the default.
func coalesce(user, defaults map[string]interface{}) map[string]interface{} {
	for key, def := range defaults {
		uv, ok := user[key]
		if !ok {
			user[key] = deepCopy(def)
			continue
		}
		if uv == nil {
			delete(user, key)
			continue
		}
		um, uIsMap := uv.(map[string]interface{})
		dm, dIsMap := def.(map[string]interface{})
		if uIsMap && dIsMap {
			user[key] = coalesce(um, dm)
		} else if uIsMap != dIsMap && def != nil {
			fmt.Fprintf(os.Stderr, "warning: cannot overwrite table with non table for %s (%v)\n", key, def)
		}
	}
	return user
}

func deepCopy(v interface{}) interface{} {
	switch x := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	default:
		return v
	}
}

// parseSet handles `a.b.c=value[,d=value]` as Helm's strvals does for plain keys (no list
// indexes): with typed=true, "true"/"false" are bools, "null" is nil and decimal integers are
// int64; everything else is a string.
func parseSet(s string, into map[string]interface{}, typed bool) error {
	for _, part := range strings.Split(s, ",") {
		kv := strings.SplitN(part, "=", 2)
		if len(kv) != 2 || kv[0] == "" {
			return fmt.Errorf("-set %q: expected key=value", part)
		}
		if strings.ContainsAny(kv[0], "[]") {
			return fmt.Errorf("-set %q: list indexes are not supported by this renderer", part)
		}
		keys := strings.Split(kv[0], ".")
		m := into
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]interface{})
			if !ok {
				next = map[string]interface{}{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = typedValue(kv[1], typed)
	}
	return nil
}

var intRe = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

func typedValue(s string, typed bool) interface{} {
	if !typed {
		return s
	}
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if intRe.MatchString(s) {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	}
	return s
}

func validateSchema(chartDir, chartName string, values map[string]interface{}) error {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	valuesJSON, err := json.Marshal(values)
	if err != nil {
		return err
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(data), gojsonschema.NewBytesLoader(valuesJSON))
	if err != nil {
		return fmt.Errorf("values.schema.json: %w", err)
	}
	if result.Valid() {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n", chartName)
	for _, e := range result.Errors() {
		fmt.Fprintf(&b, "- %s\n", e)
	}
	return errors.New(strings.TrimSuffix(b.String(), "\n"))
}

type tplFile struct {
	name    string // "<chart>/templates/<path>"
	content string
}

func loadTemplates(chartDir, chartName string) ([]tplFile, error) {
	root := filepath.Join(chartDir, "templates")
	var files []tplFile
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, tplFile{name: path.Join(chartName, "templates", filepath.ToSlash(rel)), content: string(data)})
		return nil
	})
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, err
}

const (
	errStart = "HELM_ERR_START"
	errEnd   = "HELM_ERR_END"
)

var errWrapped = regexp.MustCompile(errStart + `(?s)(.*)` + errEnd)

func funcMap(t *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	included := map[string]int{}
	f["include"] = func(name string, data interface{}) (string, error) {
		if included[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		included[name]++
		defer func() { included[name]-- }()
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	f["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New(errStart + warn + errEnd)
		}
		if s, ok := val.(string); ok && s == "" {
			return val, errors.New(errStart + warn + errEnd)
		}
		return val, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", errors.New(errStart + msg + errEnd) }
	f["toYaml"] = toYaml
	f["fromYaml"] = func(s string) map[string]interface{} {
		v, err := yamlToJSONValue([]byte(s))
		if m, ok := v.(map[string]interface{}); ok && err == nil {
			return m
		}
		if err != nil {
			return map[string]interface{}{"Error": err.Error()}
		}
		return map[string]interface{}{}
	}
	f["toJson"] = func(v interface{}) string {
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(b)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

// toYaml is Helm's: sigs.k8s.io/yaml.Marshal (JSON first, then yaml.v2 with sorted keys),
// without the trailing newline; "" when the value cannot be marshalled.
func toYaml(v interface{}) string {
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var obj interface{}
	if err := yamlv2.Unmarshal(j, &obj); err != nil {
		return ""
	}
	out, err := yamlv2.Marshal(obj)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

func render(files []tplFile, top map[string]interface{}, chartName string) (map[string]string, error) {
	t := template.New("gotpl").Option("missingkey=zero")
	t.Funcs(funcMap(t))
	for _, f := range files {
		if _, err := t.New(f.name).Parse(f.content); err != nil {
			return nil, fmt.Errorf("parse error in %s: %w", f.name, err)
		}
	}
	rendered := map[string]string{}
	for _, f := range files {
		if strings.HasPrefix(path.Base(f.name), "_") {
			continue
		}
		vals := make(map[string]interface{}, len(top)+1)
		for k, v := range top {
			vals[k] = v
		}
		vals["Template"] = map[string]interface{}{"Name": f.name, "BasePath": path.Join(chartName, "templates")}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, f.name, vals); err != nil {
			return nil, cleanupExecError(f.name, err)
		}
		rendered[f.name] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return rendered, nil
}

// cleanupExecError shortens a template error carrying a required/fail message the way Helm
// does: "execution error at (file:line:col): message".
func cleanupExecError(name string, err error) error {
	msg := err.Error()
	m := errWrapped.FindStringSubmatch(msg)
	if m == nil {
		return err
	}
	location := name
	if i := strings.Index(msg, "template: "); i >= 0 {
		rest := msg[i+len("template: "):]
		if j := strings.Index(rest, ": "); j >= 0 {
			location = rest[:j]
		}
		// The innermost location is the last "template: X:" before the message.
		for _, part := range strings.Split(msg, "template: ")[1:] {
			if j := strings.Index(part, ": "); j >= 0 && !strings.Contains(part[:j], " ") {
				location = part[:j]
			}
		}
	}
	return fmt.Errorf("execution error at (%s): %s", location, m[1])
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

func assemble(rendered map[string]string, chartName string, notes bool) (string, error) {
	names := make([]string, 0, len(rendered))
	for n := range rendered {
		names = append(names, n)
	}
	sort.Strings(names)
	notesName := path.Join(chartName, "templates", "NOTES.txt")
	var out bytes.Buffer
	for _, n := range names {
		if n == notesName {
			continue
		}
		for _, doc := range docSeparator.Split(rendered[n], -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var head map[string]interface{}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return "", fmt.Errorf("YAML parse error on %s: %w\n%s", n, err, doc)
			}
			if head == nil {
				continue // only comments
			}
			if _, ok := head["kind"]; !ok {
				return "", fmt.Errorf("%s: a document has no kind", n)
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", n, strings.Trim(doc, "\n"))
		}
	}
	if notes {
		if text, ok := rendered[notesName]; ok {
			fmt.Fprintf(&out, "\nNOTES:\n%s\n", text)
		}
	}
	return out.String(), nil
}
