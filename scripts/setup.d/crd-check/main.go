// crd-check decides custom resources against a CustomResourceDefinition with
// k8s.io/apiextensions-apiserver's own code, on the path kube-apiserver takes:
//
//   - the CRD itself: the customresourcedefinition strategy's PrepareForCreate and
//     Validate, as on `kubectl apply` of the CRD (structural schema, defaults valid
//     against the schema and the CEL rules, CEL compilation and estimated cost);
//   - each resource, as pkg/apiserver/customresource_handler.go serves a create: the
//     decoder's pruning (schema/pruning.PruneWithOptions,
//     defaulting.PruneNonNullableNullsWithoutDefaults, objectmeta.CoerceWithOptions),
//     the codec's defaulting (schema/defaulting.Default), then the customresource
//     strategy's PrepareForCreate and Validate: ObjectMeta, OpenAPI validation
//     (apiserver/validation.ValidateCustomResource), embedded objects, list-type
//     set/map invariants and the x-kubernetes-validations rules (schema/cel.Validator),
//     which are skipped when a blocking schema error exists.
//
// Usage: crd-check -crd CRD.yaml [FILE...] ("-" reads stdin). Every YAML or JSON
// document is a resource, or a list of resources. A resource without a namespace is
// created in "default", as `kubectl apply` would. Prints JSON lines: first the CRD's
// verdict, {"crd": name, "errors": [...]}, then one line per resource:
//
//	{"name", "defaulted" (the object as stored), "pruned" (unknown fields dropped),
//	 "schema_errors", "cel_errors"}
//
// The errors are the strategies' field errors as the API server reports them; those the
// CEL validator produced are cel_errors, the rest schema_errors. Exits 0 when it ran
// (verdicts are data), 2 on usage or input errors or a CRD it cannot serve at all.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apiextensions-apiserver/pkg/registry/customresource"
	"k8s.io/apiextensions-apiserver/pkg/registry/customresourcedefinition"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured/unstructuredscheme"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

type result struct {
	Name         string                 `json:"name"`
	Defaulted    map[string]interface{} `json:"defaulted"`
	Pruned       []string               `json:"pruned"`
	SchemaErrors []string               `json:"schema_errors"`
	CELErrors    []string               `json:"cel_errors"`
}

// createStrategy is the part of customresource's (unexported) strategy used on create.
type createStrategy interface {
	PrepareForCreate(context.Context, runtime.Object)
	Validate(context.Context, runtime.Object) field.ErrorList
}

// served is what the API server builds to serve one version of the CRD.
type served struct {
	structural *structuralschema.Structural
	strategy   createStrategy
	cel        *cel.Validator
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "crd-check: "+format+"\n", args...)
	os.Exit(2)
}

// loadCRD returns the CRD, defaulted, and the errors the API server rejects it with.
func loadCRD(ctx context.Context, path string) (*apiextensionsv1.CustomResourceDefinition, []string) {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(data, crd); err != nil {
		fail("%s: %v", path, err)
	}
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(crd)
	internal := &apiextensionsinternal.CustomResourceDefinition{}
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(crd, internal, nil); err != nil {
		fail("%s: %v", path, err)
	}
	crdStrategy := customresourcedefinition.NewStrategy(unstructuredscheme.NewUnstructuredObjectTyper())
	crdStrategy.PrepareForCreate(ctx, internal)
	rejected := []string{}
	for _, e := range crdStrategy.Validate(ctx, internal) {
		rejected = append(rejected, e.Error())
	}
	return crd, rejected
}

// serve builds one version's structural schema, validators and strategy, as
// crdHandler.getOrCreateServingInfoFor does.
func serve(crd *apiextensionsv1.CustomResourceDefinition, v apiextensionsv1.CustomResourceDefinitionVersion) (*served, error) {
	validation := &apiextensionsinternal.CustomResourceValidation{}
	if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(v.Schema, validation, nil); err != nil {
		return nil, err
	}
	s, err := structuralschema.NewStructural(validation.OpenAPIV3Schema)
	if err != nil {
		return nil, err
	}
	s = s.DeepCopy()
	if err := structuraldefaulting.PruneDefaults(s); err != nil {
		return nil, err
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(validation.OpenAPIV3Schema)
	if err != nil {
		return nil, err
	}
	var statusSpec *apiextensionsinternal.CustomResourceSubresourceStatus
	var statusValidator apiservervalidation.SchemaValidator
	if v.Subresources != nil && v.Subresources.Status != nil {
		statusSpec = &apiextensionsinternal.CustomResourceSubresourceStatus{}
		if statusSchema, ok := validation.OpenAPIV3Schema.Properties["status"]; ok {
			if statusValidator, _, err = apiservervalidation.NewSchemaValidator(&statusSchema); err != nil {
				return nil, err
			}
		}
	}
	var scaleSpec *apiextensionsinternal.CustomResourceSubresourceScale
	if v.Subresources != nil && v.Subresources.Scale != nil {
		scaleSpec = &apiextensionsinternal.CustomResourceSubresourceScale{}
		if err := apiextensionsv1.Convert_v1_CustomResourceSubresourceScale_To_apiextensions_CustomResourceSubresourceScale(v.Subresources.Scale, scaleSpec, nil); err != nil {
			return nil, err
		}
	}
	kind := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
	return &served{
		structural: s,
		strategy: customresource.NewStrategy(unstructuredscheme.NewUnstructuredObjectTyper(),
			crd.Spec.Scope == apiextensionsv1.NamespaceScoped, kind, validator, statusValidator, s,
			statusSpec, scaleSpec, v.SelectableFields),
		// The validator the strategy builds, run once more on its own only to tell which of
		// the strategy's errors are CEL's.
		cel: cel.NewValidator(s, true, celconfig.PerCallLimit),
	}, nil
}

// create runs one resource through decoding, defaulting and the create strategy.
func (v *served) create(ctx context.Context, object map[string]interface{}) result {
	u := &unstructured.Unstructured{Object: object}
	if u.GetNamespace() == "" {
		u.SetNamespace("default")
	}
	// schemaCoercingDecoder (unstructuredSchemaCoercer.apply), then unstructuredDefaulter.
	pruned := structuralpruning.PruneWithOptions(u.Object, v.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(u.Object, v.structural)
	if err, _ := schemaobjectmeta.CoerceWithOptions(nil, u.Object, v.structural, false, schemaobjectmeta.CoerceOptions{}); err != nil {
		return result{Name: u.GetName(), Defaulted: u.Object, Pruned: pruned, SchemaErrors: []string{err.Error()}, CELErrors: []string{}}
	}
	structuraldefaulting.Default(u.Object, v.structural)

	// rest.BeforeCreate: PrepareForCreate, then Validate.
	v.strategy.PrepareForCreate(ctx, u)
	errs := v.strategy.Validate(ctx, u)
	celErrs, _ := v.cel.Validate(ctx, nil, v.structural, u.Object, nil, celconfig.RuntimeCELCostBudget)
	fromCEL := map[string]bool{}
	for _, e := range celErrs {
		fromCEL[e.Error()] = true
	}
	r := result{Name: u.GetName(), Defaulted: u.Object, Pruned: pruned, SchemaErrors: []string{}, CELErrors: []string{}}
	if r.Pruned == nil {
		r.Pruned = []string{}
	}
	for _, e := range errs {
		if fromCEL[e.Error()] {
			r.CELErrors = append(r.CELErrors, e.Error())
		} else {
			r.SchemaErrors = append(r.SchemaErrors, e.Error())
		}
	}
	return r
}

// documents returns every resource in a YAML or JSON stream; a document may be a list.
func documents(r io.Reader) ([]map[string]interface{}, error) {
	var objects []map[string]interface{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects, nil
		}
		if err != nil {
			return nil, err
		}
		data, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		var value interface{}
		// utiljson keeps integers int64, as the API server's unstructured decoder does.
		if err := utiljson.Unmarshal(data, &value); err != nil {
			return nil, err
		}
		switch v := value.(type) {
		case nil:
		case map[string]interface{}:
			objects = append(objects, v)
		case []interface{}:
			for _, item := range v {
				object, ok := item.(map[string]interface{})
				if !ok {
					return nil, fmt.Errorf("a list item is not an object: %v", item)
				}
				objects = append(objects, object)
			}
		default:
			return nil, fmt.Errorf("a document is not an object or a list: %v", v)
		}
	}
}

func main() {
	crdPath := flag.String("crd", "", "the CustomResourceDefinition (YAML)")
	flag.Parse()
	if *crdPath == "" {
		fail("usage: crd-check -crd CRD.yaml [FILE...] (- for stdin)")
	}
	ctx := context.Background()
	crd, rejected := loadCRD(ctx, *crdPath)
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]interface{}{"crd": crd.Name, "errors": rejected}); err != nil {
		fail("%v", err)
	}
	versions := map[string]*served{}
	for _, v := range crd.Spec.Versions {
		s, err := serve(crd, v)
		if err != nil {
			fail("%s: version %s: %v", *crdPath, v.Name, err)
		}
		versions[crd.Spec.Group+"/"+v.Name] = s
	}
	for _, file := range flag.Args() {
		in := os.Stdin
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				fail("%v", err)
			}
			defer f.Close()
			in = f
		}
		objects, err := documents(in)
		if err != nil {
			fail("%s: %v", file, err)
		}
		for _, object := range objects {
			apiVersion, _ := object["apiVersion"].(string)
			v, ok := versions[apiVersion]
			if !ok {
				// The API server has no endpoint for it: a 404, not a validation error.
				fail("%s: %q is not a version of %s", file, apiVersion, crd.Name)
			}
			if err := out.Encode(v.create(ctx, object)); err != nil {
				fail("%v", err)
			}
		}
	}
}
